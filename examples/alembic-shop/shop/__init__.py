"""A tiny shop: customers, products, orders. The schema is built by the Alembic revisions."""
