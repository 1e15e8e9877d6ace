"""Reports, served by the async part of the application (SQLAlchemy's asyncio extension)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shop.models import OrderItem, Product


async def best_sellers(engine: AsyncEngine, limit: int = 3) -> list[tuple[str, int]]:
    """(sku, units sold), most sold first."""
    sold = func.sum(OrderItem.quantity)
    query = (select(Product.sku, sold).join(OrderItem, OrderItem.product_id == Product.id)
             .group_by(Product.sku).order_by(sold.desc(), Product.sku).limit(limit))
    async with AsyncSession(engine) as session:
        return [(sku, int(units)) for sku, units in (await session.execute(query)).all()]
