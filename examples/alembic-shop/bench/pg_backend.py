"""The alembic-shop suite on pytest-postgresql (for compare.py): the fixture names the sqlrs plugin
gives (`sqlrs_url`, `sqlrs_engine`, `sqlrs_session`, `sqlrs_async_engine`), made as a
pytest-postgresql user would make them: one server per pytest(-xdist) process
(`shop_postgresql_proc`, Debian's pg_ctl), the Alembic revisions applied once into the template
database (`load=`), and a database per test copied from it (`shop_postgresql`). Loaded with
`pytest -p no:sqlrs -p pg_backend`; tests that pick an earlier revision with the sqlrs marker are
deselected (pytest-postgresql has no equivalent). Every server runs with fsync=off, as sqlrs'."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def migrate(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: Any) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config("alembic.ini")
    config.set_main_option("sqlalchemy.url", f"postgresql+psycopg://{user}:{password or ''}@{host}:{port}/{dbname}")
    command.upgrade(config, "head")


PG_CTL = os.environ.get("SHOP_PG_CTL", "/usr/lib/postgresql/15/bin/pg_ctl")
# names of their own: pytest-postgresql's plugin has fixtures named postgresql_proc and postgresql
shop_postgresql_proc = factories.postgresql_proc(executable=PG_CTL, port=None, dbname="shop", load=[migrate],
                                                 postgres_options=FAST)
shop_postgresql = factories.postgresql("shop_postgresql_proc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if item.get_closest_marker("sqlrs") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlrs(**chain): the sqlrs plugin's marker (deselected here)")


@pytest.fixture
def sqlrs_url(shop_postgresql: psycopg.Connection[Any]) -> str:
    info = shop_postgresql.info
    return f"postgresql+psycopg://{info.user}:{info.password or ''}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture
def sqlrs_engine(sqlrs_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlrs_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlrs_session(sqlrs_engine: Engine) -> Iterator[Session]:
    with Session(sqlrs_engine) as session:
        yield session


@pytest.fixture
async def sqlrs_async_engine(sqlrs_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlrs_url, poolclass=NullPool)
    yield engine
    await engine.dispose()
