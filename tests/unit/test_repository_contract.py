"""The metadata Repository port's promises (sqlrs.testing.repository), kept by the SQLite adapter and
by the fake the service tests use (tests/fakes.py): both run the same tests, so the fake cannot drift
from the real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeRepository

from sqlrs.adapters.sqlite.repository import SqliteRepository, create_sqlite_engine, migrate
from sqlrs.ports.repository import Repository
from sqlrs.testing.repository import RepositoryContract


class TestRepositoryContract(RepositoryContract):
    @pytest.fixture(params=["sqlite", "fake"])
    def repo(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
        if request.param == "fake":
            yield FakeRepository()
            return
        engine = create_sqlite_engine(tmp_path / "metadata.db")
        migrate(engine)
        yield SqliteRepository(engine)
        engine.dispose()
