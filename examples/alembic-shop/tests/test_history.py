"""A test that needs the database as it was at an earlier revision: the marker picks it."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session


@pytest.mark.sqlrs(alembic="../alembic.ini", to="0004")  # relative to this file
def test_before_the_branches_products_have_no_sku(sqlrs_session: Session) -> None:
    assert sqlrs_session.scalars(text("SELECT version_num FROM alembic_version")).all() == ["0004"]
    columns = {column["name"] for column in inspect(sqlrs_session.connection()).get_columns("products")}
    assert "sku" not in columns
    assert sqlrs_session.scalar(text("SELECT count(*) FROM products")) == 3  # 0004's data migration ran
