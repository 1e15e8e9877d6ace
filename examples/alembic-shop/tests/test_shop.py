"""The shop against the database its Alembic revisions build (sqlrs_alembic in pytest.ini)."""

from __future__ import annotations

import pytest
from shop.models import Base, Customer, Order, Product, order_total_cents, place_order
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


def test_the_database_is_at_the_merge_head(session: Session) -> None:
    assert session.scalars(text("SELECT version_num FROM alembic_version")).all() == ["0007"]


def test_the_models_match_the_migrated_schema(session: Session) -> None:
    inspector = inspect(session.connection())
    for table in Base.metadata.sorted_tables:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        assert columns == {column.name for column in table.columns}, table.name


def test_the_data_migrations_ran(session: Session) -> None:
    # 0004 seeded the catalogue, 0007 backfilled the skus and emails
    skus = session.scalars(select(Product.sku).order_by(Product.id)).all()
    assert skus == ["SKU-0001", "SKU-0002", "SKU-0003"]
    ada = session.scalars(select(Customer).where(Customer.name == "Ada Lovelace")).one()
    assert ada.email == "ada.lovelace@example.com"
    assert order_total_cents(session, 1) == 2 * 2490 + 1250


def test_placing_an_order(session: Session) -> None:
    alan = session.scalars(select(Customer).where(Customer.name == "Alan Turing")).one()
    order = place_order(session, alan, {"SKU-0002": 1, "SKU-0003": 2})
    session.commit()
    assert order.id == 2  # the seed moved the sequence past its own ids
    assert order_total_cents(session, order.id) == 8900 + 2 * 1250


@pytest.mark.parametrize("round_", range(4))
def test_every_test_starts_from_the_same_state(session: Session, round_: int) -> None:
    # tests run in any order, on any xdist worker: none sees another's writes
    assert session.scalar(select(func.count()).select_from(Order)) == 1
    session.add(Customer(name=f"Customer {round_}", email=f"c{round_}@example.com"))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Customer)) == 3


def test_constraints_from_the_revisions_hold(session: Session) -> None:
    session.add(Customer(name="Duplicate", email="ada.lovelace@example.com"))
    with pytest.raises(IntegrityError):
        session.commit()
