"""Fixtures of the example suite: `db` is a psycopg connection to a fresh Sakila database.

Where the database comes from is chosen with SAKILA_BACKEND:

    sqlrs              (default) the sqlrs pytest plugin: an instance cloned from a cached state
    testcontainers     one container per worker, a database per test copied from a template
    pytest-postgresql  one server per worker (pg_ctl), a database per test copied from a template

The tests themselves do not know which one they run on. SAKILA_DIR points at the data set (default:
the repository's sibling ../shared/datasets/sakila). With SAKILA_TIMINGS=FILE every test appends
how long it waited for its database (JSON lines), whatever the backend, for bench/compare.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the repository root is HERE/../..; the data sets live beside the repository
os.environ.setdefault("SAKILA_DIR", str((HERE / ".." / ".." / ".." / "shared" / "datasets" / "sakila").resolve()))
SAKILA_DIR = Path(os.environ["SAKILA_DIR"])
SAKILA_FILES = [SAKILA_DIR / name for name in ("00-preamble.sql", "1-postgres-sakila-schema.sql",
                                               "2-postgres-sakila-insert-data-using-copy.sql")]
BACKEND = os.environ.get("SAKILA_BACKEND", "sqlrs")

if BACKEND == "sqlrs":

    @pytest.fixture
    def db_dsn(sqlrs_dsn: str) -> str:  # the plugin's fixture; the state is set in pytest.ini
        return sqlrs_dsn

elif BACKEND == "testcontainers":
    from backends import testcontainers_db_dsn as db_dsn
    from backends import testcontainers_server  # noqa: F401

elif BACKEND == "pytest-postgresql":
    from backends import postgresql, postgresql_proc  # noqa: F401
    from backends import pytest_postgresql_db_dsn as db_dsn  # noqa: F401

else:
    raise pytest.UsageError(f"SAKILA_BACKEND={BACKEND!r}: use sqlrs, testcontainers or pytest-postgresql")


def _record(nodeid: str, seconds: float) -> None:
    target = os.environ.get("SAKILA_TIMINGS")
    if target:
        line = json.dumps({"test": nodeid, "backend": BACKEND, "wait_seconds": seconds,
                           "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}) + "\n"
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@pytest.fixture
def db(request: pytest.FixtureRequest) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a database of this test's own, with Sakila loaded."""
    started = time.perf_counter()
    dsn = request.getfixturevalue("db_dsn")
    _record(request.node.nodeid, time.perf_counter() - started)
    with psycopg.connect(dsn) as conn:
        yield conn
