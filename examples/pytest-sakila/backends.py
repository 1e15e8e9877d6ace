"""The baselines bench/compare.py measures sqlrs against, written the way their docs suggest.

Both keep one server per pytest(-xdist) process, load Sakila once into a template database,
and give each test a database copied from it (CREATE DATABASE ... TEMPLATE): that is what
pytest-postgresql does itself, and the usual way to get per-test isolation from one container.

Adaptations (no registry here, so no official image and no Ryuk reaper):
- testcontainers runs the local image localhost/sqlrs-test-postgres:16 (scripts/build-test-image.sh;
  SAKILA_TC_IMAGE overrides). It has the official image's binaries and `postgres` user but no
  docker-entrypoint.sh, so the container's command runs initdb and postgres itself; Ryuk is off
  (TESTCONTAINERS_RYUK_DISABLED), the fixture removes its container.
- Sakila's data file uses psql's COPY ... FROM stdin, which pytest-postgresql's .sql loader
  (psycopg execute) cannot run: both load it with psql.
- Every server runs with fsync=off, synchronous_commit=off, full_page_writes=off, as sqlrs does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

SAKILA_DIR = Path(os.environ["SAKILA_DIR"])
SAKILA_FILES = [SAKILA_DIR / name for name in ("00-preamble.sql", "1-postgres-sakila-schema.sql",
                                               "2-postgres-sakila-insert-data-using-copy.sql")]
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
TEMPLATE = "sakila_template"


def load_sakila(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: Any) -> None:
    env = {**os.environ, "PGPASSWORD": password or ""}
    for path in SAKILA_FILES:
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port), "-U", user,
                        "-d", dbname, "-f", str(path)], check=True, env=env, stdout=subprocess.DEVNULL)


def _fresh_database(admin_dsn: str, template: str) -> str:
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return name


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- testcontainers ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def testcontainers_server() -> Iterator[dict[str, Any]]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    image = os.environ.get("SAKILA_TC_IMAGE", "localhost/sqlrs-test-postgres:16")
    password = secrets.token_urlsafe(12)
    script = (
        "set -e; D=/var/lib/postgresql/data/pg; printf '%s' \"$POSTGRES_PASSWORD\" > /tmp/pw; "
        "initdb -D $D -U postgres --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null; "
        "echo 'host all all all scram-sha-256' >> $D/pg_hba.conf; "
        "exec postgres -D $D -c listen_addresses='*' " + " ".join(FAST)
    )
    container = (DockerContainer(image).with_env("POSTGRES_PASSWORD", password).with_exposed_ports(5432)
                 .with_command(["sh", "-c", script]).with_kwargs(user="postgres"))
    container.start()
    try:
        wait_for_logs(container, "database system is ready to accept connections", timeout=120)
        host, port = container.get_container_host_ip(), int(container.get_exposed_port(5432))
        admin = f"postgresql://postgres:{password}@{host}:{port}/postgres"
        for _ in range(100):  # the log line can come a moment before the port is published
            try:
                psycopg.connect(admin).close()
                break
            except psycopg.OperationalError:
                import time

                time.sleep(0.1)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        load_sakila(host, port, "postgres", TEMPLATE, password)
        yield {"admin": admin, "host": host, "port": port, "password": password}
    finally:
        container.stop()


@pytest.fixture
def testcontainers_db_dsn(testcontainers_server: dict[str, Any]) -> Iterator[str]:
    server = testcontainers_server
    name = _fresh_database(server["admin"], TEMPLATE)
    try:
        yield f"postgresql://postgres:{server['password']}@{server['host']}:{server['port']}/{name}"
    finally:
        _drop_database(server["admin"], name)


# -- pytest-postgresql ---------------------------------------------------------------------------------
def _pytest_postgresql_fixtures() -> tuple[Any, Any]:
    try:
        from pytest_postgresql import factories
    except ImportError:  # only needed with SAKILA_BACKEND=pytest-postgresql
        return None, None
    proc = factories.postgresql_proc(
        executable=os.environ.get("SAKILA_PG_CTL", "/usr/lib/postgresql/15/bin/pg_ctl"), port=None,
        dbname=TEMPLATE, load=[load_sakila], postgres_options=" ".join(FAST),
    )
    return proc, factories.postgresql("postgresql_proc")


postgresql_proc, postgresql = _pytest_postgresql_fixtures()


@pytest.fixture
def pytest_postgresql_db_dsn(postgresql: psycopg.Connection[Any]) -> str:
    info = postgresql.info
    return f"postgresql://{info.user}:{info.password or ''}@{info.host}:{info.port}/{info.dbname}"
