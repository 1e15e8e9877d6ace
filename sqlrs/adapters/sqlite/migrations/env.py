"""Alembic environment: runs on the connection the engine hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from sqlrs.adapters.sqlite.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when run by hand with a URL
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url") or "").connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
