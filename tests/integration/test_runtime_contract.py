"""The Runtime contract (sqlrs/ports/runtime.py; the suite is sqlrs.testing.runtime), run unchanged
against every runtime adapter:

- native  PostgreSQL binaries on this host (run as `postgres`),
- docker  containers of `SQLRS_TEST_IMAGE` (default localhost/sqlrs-test-postgres:16),
- podman  the same image through the Podman API service,
- and the fake of the service tests (tests/fakes.py), on the promises that need no PostgreSQL.

No engine and no mocks: each adapter makes a real cluster with `initdb`, and each test runs real
servers on copies of it. A runtime that is not available here skips its tests with the reason,
unless `SQLRS_REQUIRE` names it: then they fail (see sqlrs/testing/require.py). Another runtime
joins the suite with one factory in `_runtimes.FACTORIES`. What only containers do (labels,
published ports, images) is tested in test_container_runtimes.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _runtimes import FACTORIES, open_runtime
from fakes import FakeRuntime, FakeServer

from sqlrs.ports.runtime import InstanceSpec
from sqlrs.testing.runtime import PostgresRuntimeContract, RuntimeContract, RuntimeUnderTest

pytestmark = pytest.mark.timeout(600)


class TestRuntimeContract(PostgresRuntimeContract):
    @pytest.fixture(scope="class", params=list(FACTORIES))
    @classmethod
    def rut(cls, request: pytest.FixtureRequest) -> Iterator[RuntimeUnderTest]:
        with open_runtime(request.param) as opened:
            yield opened


def fake(servers: dict[str, FakeServer]) -> RuntimeUnderTest:
    """The fake runtime; a new adapter shares its server records (its "processes")."""

    def held(spec: InstanceSpec, ref: str) -> list[str]:
        return [f"fake server {s.ref}" for s in servers.values() if s.running and s.spec.data_dir == spec.data_dir]

    return RuntimeUnderTest("native", FakeRuntime(servers=servers), None, held, reopen=lambda: fake(servers))


class TestFakeRuntime(RuntimeContract):
    """The fake keeps the promises that need no real PostgreSQL (PostgresRuntimeContract adds those)."""

    root_prefix = "sqlrs-fake-rc-"

    @pytest.fixture(scope="class")
    @classmethod
    def rut(cls) -> RuntimeUnderTest:
        return fake({})
