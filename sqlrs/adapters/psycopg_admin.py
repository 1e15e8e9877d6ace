"""`ServerAdmin` on psycopg 3, over the server's Unix socket."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from sqlrs.domain.errors import RuntimeFailure
from sqlrs.domain.roles import ENGINE_ROLE
from sqlrs.ports.admin import ClientSession

PROBE_NAME = "sqlrs-engine"
# Client sessions, not background workers, not this probe, not other engine sessions.
CONNECTIONS_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
    "AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s"
)
SESSIONS_SQL = (
    "SELECT pid, usename, application_name, host(client_addr), backend_start FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
    "AND application_name IS DISTINCT FROM %s ORDER BY backend_start, pid"
)


def connect(socket_dir: Path, port: int, timeout: float = 30.0, dbname: str = "postgres",
            user: str = ENGINE_ROLE) -> psycopg.Connection:
    """An autocommit connection (as the engine's role, by default) over the server's Unix socket,
    retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(
                host=str(socket_dir),
                port=port,
                user=user,
                dbname=dbname,
                autocommit=True,
                connect_timeout=max(1, int(timeout)),
                application_name=PROBE_NAME,
            )
        except psycopg.OperationalError as exc:
            # "the database system is starting up" can follow a ready postmaster.pid briefly
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"cannot connect to the server: {exc}".strip()) from exc
            time.sleep(0.01)


class PsycopgAdmin:
    def execute(self, socket_dir: Path, port: int, statements: Sequence[str], timeout: float = 30.0,
                dbname: str = "postgres", user: str = ENGINE_ROLE) -> None:
        with connect(socket_dir, port, timeout, dbname, user) as conn:
            for statement in statements:
                try:
                    conn.execute(statement.encode())
                except psycopg.Error as exc:
                    raise RuntimeFailure(f"server rejected {statement.split()[0:2]}: {exc}".strip()) from exc

    def query(self, socket_dir: Path, port: int, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with connect(socket_dir, port, 30.0, dbname) as conn:
            try:
                return [tuple(row) for row in conn.execute(sql.encode()).fetchall()]
            except psycopg.Error as exc:
                raise RuntimeFailure(f"server rejected a query: {exc}".strip()) from exc

    def set_password(self, socket_dir: Path, port: int, role: str, verifier: str) -> None:
        query = sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
        with connect(socket_dir, port, 30.0) as conn:
            try:
                conn.execute(query)
            except psycopg.Error as exc:
                raise RuntimeFailure(f"cannot set the instance password: {exc}".strip()) from exc

    def _probe(self, socket_dir: Path, port: int, timeout: float) -> psycopg.Connection | None:
        """A connection to count clients with; None when the server is full of them."""
        try:
            return psycopg.connect(host=str(socket_dir), port=port, user=ENGINE_ROLE, dbname="postgres",
                                   autocommit=True, connect_timeout=max(1, int(timeout)),
                                   application_name=PROBE_NAME)
        except psycopg.OperationalError as exc:
            if "too many clients" in str(exc) or "remaining connection slots" in str(exc):
                return None  # full of clients: certainly in use
            raise RuntimeFailure(f"cannot connect to the server: {exc}".strip()) from exc

    def client_connections(self, socket_dir: Path, port: int, timeout: float = 5.0,
                           database: str | None = None) -> int:
        conn = self._probe(socket_dir, port, timeout)
        if conn is None:
            return 1
        with conn:
            try:
                if database is None:
                    row = conn.execute(CONNECTIONS_SQL, (PROBE_NAME,)).fetchone()
                else:
                    row = conn.execute(CONNECTIONS_SQL + " AND datname = %s", (PROBE_NAME, database)).fetchone()
            except psycopg.Error as exc:
                raise RuntimeFailure(f"cannot read pg_stat_activity: {exc}".strip()) from exc
        return int(row[0]) if row else 0

    def client_sessions(self, socket_dir: Path, port: int, timeout: float = 5.0,
                        database: str | None = None) -> list[ClientSession]:
        conn = self._probe(socket_dir, port, timeout)
        if conn is None:  # cannot list them, but there are clients: say so rather than nothing
            return [ClientSession(0, None, "(the server refuses more connections: too many clients)", None, None)]
        with conn:
            try:
                if database is None:
                    rows = conn.execute(SESSIONS_SQL, (PROBE_NAME,)).fetchall()
                else:
                    rows = conn.execute(SESSIONS_SQL.replace(" ORDER BY", " AND datname = %s ORDER BY"),
                                        (PROBE_NAME, database)).fetchall()
            except psycopg.Error as exc:
                raise RuntimeFailure(f"cannot read pg_stat_activity: {exc}".strip()) from exc
        return [ClientSession(int(pid), user, app or None, addr, start) for pid, user, app, addr, start in rows]
