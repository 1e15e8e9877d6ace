"""The application as it connects in production (a URL), and plain SQLAlchemy Core.

`sqlrs_url` is this test's database as a SQLAlchemy URL (`postgresql+psycopg://...`; the driver
is the `sqlrs_driver` ini option); `sqlrs_engine` is an Engine on it, disposed after the test.
"""

from __future__ import annotations

import pytest
from shop.db import engine_from_environment
from shop.models import Product
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError


def test_the_application_connects_by_url(sqlrs_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlrs_url.startswith("postgresql+psycopg://")
    monkeypatch.setenv("SHOP_DATABASE_URL", sqlrs_url)
    engine = engine_from_environment()
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Product)) == 3
    finally:
        engine.dispose()


def test_core_writes_on_the_tests_own_database(sqlrs_engine: Engine) -> None:
    with sqlrs_engine.begin() as conn:
        conn.execute(insert(Product), [{"name": "Tamper", "sku": "SKU-0004", "price_cents": 1990}])
    with sqlrs_engine.connect() as conn:  # committed: another connection sees it
        assert conn.scalar(select(func.count()).select_from(Product)) == 4
    with pytest.raises(IntegrityError), sqlrs_engine.begin() as conn:  # 0001's check constraint
        conn.execute(insert(Product), [{"name": "Free lunch", "sku": "SKU-0005", "price_cents": -1}])
