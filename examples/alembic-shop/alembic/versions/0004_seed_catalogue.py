"""seed the catalogue and a demo customer (data migration)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


products = sa.table("products", sa.column("id", sa.Integer), sa.column("name", sa.String),
                    sa.column("price_cents", sa.Integer))
customers = sa.table("customers", sa.column("id", sa.Integer), sa.column("name", sa.String))
orders = sa.table("orders", sa.column("id", sa.Integer), sa.column("customer_id", sa.Integer))
order_items = sa.table("order_items", sa.column("order_id", sa.Integer), sa.column("product_id", sa.Integer),
                       sa.column("quantity", sa.Integer))


def upgrade() -> None:
    """Upgrade schema."""
    op.bulk_insert(products, [
        {"id": 1, "name": "Espresso beans 1kg", "price_cents": 2490},
        {"id": 2, "name": "Burr grinder", "price_cents": 8900},
        {"id": 3, "name": "Milk jug", "price_cents": 1250},
    ])
    op.bulk_insert(customers, [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Alan Turing"}])
    op.bulk_insert(orders, [{"id": 1, "customer_id": 1}])
    op.bulk_insert(order_items, [{"order_id": 1, "product_id": 1, "quantity": 2},
                                 {"order_id": 1, "product_id": 3, "quantity": 1}])
    # explicit ids above: move the sequences past them
    for table in ("products", "customers", "orders"):
        op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("DELETE FROM order_items")
    op.execute("DELETE FROM orders")
    op.execute("DELETE FROM customers")
    op.execute("DELETE FROM products")
