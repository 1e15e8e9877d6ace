"""The `DatabaseInspector` port: what a database holds, read inside its server for comparisons.

The engine compares two databases (`sqlrs compare`, services/compare.py) without copying their
data out: the inspector describes each schema as objects a reader would name
(sqlrs.domain.compare) and has each server compute a row count and a digest per table that does
not depend on the rows' physical order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlrs.domain.compare import Schema, TableContent


@dataclass(frozen=True)
class Database:
    """A database to read: its server's Unix socket directory and port, and its name."""

    socket_dir: Path
    port: int
    dbname: str


class DatabaseInspector(Protocol):
    def describe(self, database: Database) -> Schema:
        """The database's schema (user objects only: no system schemas, no objects that belong to
        an extension) and the columns of its tables; raise RuntimeFailure when it cannot be read."""
        ...

    def contents(self, database: Database, tables: Mapping[str, Sequence[str]],
                 digests: bool = True) -> dict[str, TableContent]:
        """Per table (qualified name -> the columns to digest): its row count and, with `digests`,
        a digest of its rows over those columns that does not depend on the rows' physical order."""
        ...

    def sequences(self, database: Database) -> dict[str, int | None]:
        """Every user sequence (qualified name) and its last value (None: never used)."""
        ...
