"""The shop against the database its Alembic revisions build (sqlrs_alembic in pytest.ini).

`sqlrs_session` (the sqlrs plugin) is an ORM session on this test's own copy of the migrated
database: tests commit as the application would, and no other test sees it."""

from __future__ import annotations

import pytest
from shop.models import Base, Customer, Order, Product, order_total_cents, place_order
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session


def test_the_database_is_at_the_merge_head(sqlrs_session: Session) -> None:
    assert sqlrs_session.scalars(text("SELECT version_num FROM alembic_version")).all() == ["0007"]


def test_the_models_match_the_migrated_schema(sqlrs_session: Session) -> None:
    inspector = inspect(sqlrs_session.connection())
    for table in Base.metadata.sorted_tables:
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        assert columns == {column.name for column in table.columns}, table.name


def test_the_data_migrations_ran(sqlrs_session: Session) -> None:
    # 0004 seeded the catalogue, 0007 backfilled the skus and emails
    skus = sqlrs_session.scalars(select(Product.sku).order_by(Product.id)).all()
    assert skus == ["SKU-0001", "SKU-0002", "SKU-0003"]
    ada = sqlrs_session.scalars(select(Customer).where(Customer.name == "Ada Lovelace")).one()
    assert ada.email == "ada.lovelace@example.com"
    assert order_total_cents(sqlrs_session, 1) == 2 * 2490 + 1250


def test_placing_an_order(sqlrs_session: Session) -> None:
    alan = sqlrs_session.scalars(select(Customer).where(Customer.name == "Alan Turing")).one()
    order = place_order(sqlrs_session, alan, {"SKU-0002": 1, "SKU-0003": 2})
    sqlrs_session.commit()
    assert order.id == 2  # the seed moved the sequence past its own ids
    assert order_total_cents(sqlrs_session, order.id) == 8900 + 2 * 1250


@pytest.mark.parametrize("round_", range(4))
def test_every_test_starts_from_the_same_state(sqlrs_session: Session, round_: int) -> None:
    # tests run in any order, on any xdist worker: none sees another's writes
    assert sqlrs_session.scalar(select(func.count()).select_from(Order)) == 1
    sqlrs_session.add(Customer(name=f"Customer {round_}", email=f"c{round_}@example.com"))
    sqlrs_session.commit()
    assert sqlrs_session.scalar(select(func.count()).select_from(Customer)) == 3


def test_constraints_from_the_revisions_hold(sqlrs_session: Session) -> None:
    sqlrs_session.add(Customer(name="Duplicate", email="ada.lovelace@example.com"))
    with pytest.raises(IntegrityError):
        sqlrs_session.commit()
