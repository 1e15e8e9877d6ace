"""The `ServerAdmin` port: SQL the engine itself runs on a server it manages.

Used for what must happen on every start (setting the instance's password) and for building
the base (creating the `sqlrs` role). Connects over the server's Unix socket as `sqlrs`, the role
every cluster sqlrs makes has (sqlrs.domain.roles); only the base's first statements run as its
bootstrap superuser, before `sqlrs` exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlrs.domain.roles import ENGINE_ROLE


@dataclass(frozen=True)
class ClientSession:
    """A client connected to a server: one client backend in its `pg_stat_activity`."""

    pid: int
    user: str | None
    application_name: str | None
    client_addr: str | None  # None: over a Unix socket
    backend_start: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "user": self.user, "application_name": self.application_name,
                "client_addr": self.client_addr,
                "backend_start": self.backend_start.isoformat() if self.backend_start else None}


class ServerAdmin(Protocol):
    def execute(self, socket_dir: Path, port: int, statements: Sequence[str], timeout: float = 30.0,
                dbname: str = "postgres", user: str = ENGINE_ROLE) -> None:
        """Run `statements` in autocommit mode in database `dbname` as `user`; raise RuntimeFailure
        on error."""
        ...

    def query(self, socket_dir: Path, port: int, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """The rows of one query (engine-written SQL only); raise RuntimeFailure on error."""
        ...

    def set_password(self, socket_dir: Path, port: int, role: str, verifier: str) -> None:
        """Set `role`'s password to a pre-computed SCRAM verifier."""
        ...

    def client_connections(self, socket_dir: Path, port: int, timeout: float = 5.0,
                           database: str | None = None) -> int:
        """How many client backends are connected (pg_stat_activity), not counting this probe;
        only those connected to `database` when given (a database instance in a shared server)."""
        ...

    def client_sessions(self, socket_dir: Path, port: int, timeout: float = 5.0,
                        database: str | None = None) -> list[ClientSession]:
        """The connected client backends (pg_stat_activity), oldest first, not counting this
        probe or other engine sessions; only those on `database` when given."""
        ...
