"""How the application gets its database: a URL in its environment, as in production."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine


def engine_from_environment() -> Engine:
    """The engine of `SHOP_DATABASE_URL` (a SQLAlchemy URL, e.g. `postgresql+psycopg://...`)."""
    return create_engine(os.environ["SHOP_DATABASE_URL"])
