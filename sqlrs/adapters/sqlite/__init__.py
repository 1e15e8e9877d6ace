"""Metadata store: SQLite through SQLAlchemy 2 Core, schema managed by Alembic."""
