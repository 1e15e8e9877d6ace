"""customers get an email (branch: accounts)

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-26 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("customers", sa.Column("email", sa.String(200), nullable=True))
    op.create_index("customers_email_key", "customers", ["email"], unique=True)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("customers_email_key", table_name="customers")
    op.drop_column("customers", "email")
