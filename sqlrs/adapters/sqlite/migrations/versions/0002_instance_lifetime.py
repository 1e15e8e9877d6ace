"""Instance lifetime: an idle TTL per instance, and warm-pool spares.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("ttl_seconds", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pooled", sa.Boolean, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("pooled")
        batch.drop_column("ttl_seconds")
