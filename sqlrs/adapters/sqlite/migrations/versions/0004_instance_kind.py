"""Instance kinds: a database in a state's shared server, besides a server of its own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="server"))
        batch.add_column(sa.Column("host_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("host_id")
        batch.drop_column("kind")
