"""SQLAlchemy models of the schema the Alembic revisions build (head: 0007)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("price_cents >= 0", name="products_price_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    sku: Mapped[str] = mapped_column(String(20), unique=True)
    price_cents: Mapped[int] = mapped_column(Integer)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    customer: Mapped[Customer] = relationship(back_populates="orders")
    items: Mapped[list[OrderItem]] = relationship(cascade="all, delete-orphan")


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="order_items_quantity_positive"),)

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    product: Mapped[Product] = relationship()


def place_order(session: Session, customer: Customer, quantities: dict[str, int]) -> Order:
    """An order of `quantities` (by sku) for `customer`."""
    products = {p.sku: p for p in session.scalars(select(Product).where(Product.sku.in_(quantities)))}
    missing = set(quantities) - set(products)
    if missing:
        raise KeyError(f"unknown sku(s): {sorted(missing)}")
    order = Order(customer=customer,
                  items=[OrderItem(product=products[sku], quantity=n) for sku, n in quantities.items()])
    session.add(order)
    session.flush()
    return order


def order_total_cents(session: Session, order_id: int) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(OrderItem.quantity * Product.price_cents), 0))
        .join(Product, Product.id == OrderItem.product_id).where(OrderItem.order_id == order_id))
    return int(total or 0)
