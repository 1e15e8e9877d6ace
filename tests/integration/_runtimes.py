"""sqlrs' runtime adapters under test, without the engine: one factory per runtime name (and the
fake of the service tests), for the Runtime contract suite (test_runtime_contract.py, which runs
sqlrs.testing.runtime on them) and the docker/podman-specific tests (test_container_runtimes.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import TEST_IMAGE

from sqlrs.ports.runtime import InstanceSpec, RuntimeIdentity
from sqlrs.testing.require import require
from sqlrs.testing.runtime import (
    RuntimeUnderTest,
    Servers,
    host_processes,
    make_template,
    opened,
    postmaster_status,
    resolve_identity,
    scratch_root,
)

__all__ = ["CONTAINER_RUNTIMES", "FACTORIES", "RUN_LABELS", "RuntimeUnderTest", "Servers", "open_runtime",
           "postmaster_status", "resolve_identity", "server_fixtures"]

# Every container these tests make carries this label, so a module's teardown finds them all.
RUN_LABELS = {"sqlrs.test": f"runtimes-{uuid.uuid4().hex[:12]}"}
CONTAINER_RUNTIMES = ("docker", "podman")


def _native() -> RuntimeUnderTest:
    from sqlrs.adapters.native import NativeRuntime

    runtime = NativeRuntime(pg_bin=None, user="postgres", binaries_cache=Path("/tmp/sqlrs-test-pg"))
    return RuntimeUnderTest("native", runtime, None, host_processes, reopen=_native)


def cli_container_ids(tool: str, *labels: str) -> list[str]:
    """Ids of containers (running or not) carrying all `labels` (`key=value`), asked through the CLI."""
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    result = subprocess.run([tool, "ps", "-a", "-q", "--no-trunc", *filters], capture_output=True, text=True,
                            check=True, timeout=60)
    return result.stdout.split()


def _container(name: str) -> RuntimeUnderTest:
    from sqlrs.adapters.containers.runtime import ContainerRuntime

    adapter: ContainerRuntime
    if name == "docker":
        from sqlrs.adapters.containers.docker import DockerRuntime

        adapter = DockerRuntime(labels=RUN_LABELS)
    else:
        from sqlrs.adapters.containers.podman import PodmanRuntime

        adapter = PodmanRuntime(labels=RUN_LABELS)
    run_label = "sqlrs.test=" + RUN_LABELS["sqlrs.test"]

    def held(spec: InstanceSpec, ref: str) -> list[str]:
        return [f"{name} container {cid[:12]}" for cid in cli_container_ids(name, run_label,
                                                                             f"sqlrs.instance={spec.instance_id}")]

    def leftovers() -> list[str]:
        found = cli_container_ids(name, run_label)
        for cid in found:
            subprocess.run([name, "rm", "-f", cid], capture_output=True, check=False, timeout=60)
        return [f"{name} container {cid[:12]}" for cid in found]

    return RuntimeUnderTest(name, adapter, TEST_IMAGE, held, lambda: _container(name), leftovers, adapter.close)


FACTORIES: dict[str, Callable[[], RuntimeUnderTest]] = {
    "native": _native,
    "docker": lambda: _container("docker"),
    "podman": lambda: _container("podman"),
}


@contextlib.contextmanager
def open_runtime(name: str) -> Iterator[RuntimeUnderTest]:
    """The runtime `name`, probed: skipped when unavailable (failed under SQLRS_REQUIRE). At the
    end, fails when anything of it is left (after removing it)."""
    try:
        rut = FACTORIES[name]()
    except ImportError as exc:
        require(name, False, f"SDK missing: {exc}")
        raise
    with opened(rut) as probed:
        yield probed


def server_fixtures(prefix: str) -> tuple[object, object, object, object]:
    """The module-scoped `root`, `identity`, `template` and the per-test `servers` fixtures a
    runtime test module needs besides its own `rut` (bind them to those names in the module; a
    test class gets them from sqlrs.testing.runtime.RuntimeServers)."""

    @pytest.fixture(scope="module")
    def root() -> Iterator[Path]:
        with scratch_root(prefix) as path:
            yield path

    @pytest.fixture(scope="module")
    def identity(rut: RuntimeUnderTest) -> RuntimeIdentity:
        return resolve_identity(rut)

    @pytest.fixture(scope="module")
    def template(rut: RuntimeUnderTest, identity: RuntimeIdentity, root: Path) -> Path:
        return make_template(rut, identity, root)

    @pytest.fixture
    def servers(rut: RuntimeUnderTest, identity: RuntimeIdentity, template: Path, root: Path) -> Iterator[Servers]:
        made = Servers(rut, identity, template, root)
        try:
            yield made
        finally:
            made.close()

    return root, identity, template, servers
