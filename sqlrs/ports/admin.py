"""The `ServerAdmin` port: SQL the engine itself runs on a server it manages.

Used for what must happen on every start (setting the instance's password) and for building
the base (creating the `sqlrs` role). Connects over the server's Unix socket as `postgres`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class ServerAdmin(Protocol):
    def execute(self, socket_dir: Path, port: int, statements: Sequence[str], timeout: float = 30.0,
                dbname: str = "postgres") -> None:
        """Run `statements` in autocommit mode in database `dbname`; raise RuntimeFailure on error."""
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
