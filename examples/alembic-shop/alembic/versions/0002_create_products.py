"""create products

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("price_cents", sa.Integer, nullable=False),
        sa.CheckConstraint("price_cents >= 0", name="products_price_not_negative"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("products")
