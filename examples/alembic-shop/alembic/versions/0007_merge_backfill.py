"""merge catalogue and accounts; backfill sku and email, then require them (data migration)

Revision ID: 0007
Revises: 0005, 0006
Create Date: 2026-11-27 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = ('0005', '0006')
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("UPDATE products SET sku = 'SKU-' || lpad(id::text, 4, '0') WHERE sku IS NULL")
    op.execute("UPDATE customers SET email = lower(replace(name, ' ', '.')) || '@example.com' WHERE email IS NULL")
    op.alter_column("products", "sku", nullable=False)
    op.create_unique_constraint("products_sku_key", "products", ["sku"])
    op.alter_column("customers", "email", nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.alter_column("customers", "email", nullable=True)
    op.drop_constraint("products_sku_key", "products")
    op.alter_column("products", "sku", nullable=True)
