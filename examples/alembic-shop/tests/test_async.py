"""The async part of the application against the test's own database.

`sqlrs_async_engine` is a SQLAlchemy AsyncEngine on this test's database (driver: the
`sqlrs_async_driver` ini option, psycopg by default). It is a plain fixture: any async test
runner works; these tests use anyio's pytest plugin (anyio comes with sqlrs' dependencies;
pytest-asyncio's `@pytest.mark.asyncio` works the same way).
"""

from __future__ import annotations

import pytest
from shop.models import Customer, Order, Product, place_order
from shop.reports import best_sellers
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_best_sellers(sqlrs_async_engine: AsyncEngine) -> None:
    assert await best_sellers(sqlrs_async_engine) == [("SKU-0001", 2), ("SKU-0003", 1)]


@pytest.mark.parametrize("round_", range(2))
async def test_async_orders_stay_in_their_test(sqlrs_async_engine: AsyncEngine, round_: int) -> None:
    async with AsyncSession(sqlrs_async_engine) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1  # nobody else's order
        alan = (await session.scalars(select(Customer).where(Customer.name == "Alan Turing"))).one()
        await session.run_sync(lambda sync: place_order(sync, alan, {"SKU-0002": 3}))
        await session.commit()
    assert (await best_sellers(sqlrs_async_engine, limit=1)) == [("SKU-0002", 3)]
    async with AsyncSession(sqlrs_async_engine) as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 3
