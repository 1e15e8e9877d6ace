from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session


@pytest.fixture
def session(sqlrs_dsn: str) -> Iterator[Session]:
    """An ORM session on this test's own database (a fresh copy of the migrated state)."""
    engine = create_engine(sqlrs_dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()
