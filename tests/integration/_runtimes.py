"""Runtime adapters under test, without the engine: one factory per runtime name, servers on
copies of one initdb'd template, and helpers to reach them.

Shared by the Runtime contract suite (test_runtime_contract.py) and the docker/podman-specific
tests (test_container_runtimes.py). A new runtime (e.g. a fake) joins the contract suite by
adding one factory to `FACTORIES`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from _require import require
from harness import TEST_IMAGE, processes_mentioning

from sqlrs.domain.errors import RuntimeUnavailable
from sqlrs.ports.runtime import InstanceSpec, Runtime, RuntimeIdentity

PG_HBA = "local all all trust\nhost all all all scram-sha-256\n"
READY_TIMEOUT = 60.0
# Every container these tests make carries this label, so a module's teardown finds them all.
RUN_LABELS = {"sqlrs.test": f"runtimes-{uuid.uuid4().hex[:12]}"}
CONTAINER_RUNTIMES = ("docker", "podman")


@dataclass
class RuntimeUnderTest:
    """One runtime adapter and what the tests need to know about it beyond the port."""

    name: str
    runtime: Runtime
    image: str | None  # what `resolve` is asked for
    # What the runtime still holds for an instance (processes, containers), described for people;
    # asked through the OS or the runtime's own CLI, not through the adapter.
    held: Callable[[InstanceSpec, str], list[str]]
    # Everything left at the end of a module (after its servers were discarded): removes it and
    # says what it was.
    leftovers: Callable[[], list[str]] = field(default=lambda: [])
    close: Callable[[], None] = field(default=lambda: None)


def _native() -> RuntimeUnderTest:
    from sqlrs.adapters.native import NativeRuntime

    runtime = NativeRuntime(pg_bin=None, user="postgres", binaries_cache=Path("/tmp/sqlrs-test-pg"))

    def held(spec: InstanceSpec, ref: str) -> list[str]:
        # the postmaster names its data directory on its command line; its children die with it
        return [f"pid {pid}: {cmdline}" for pid, cmdline in processes_mentioning(str(spec.data_dir))]

    return RuntimeUnderTest("native", runtime, None, held)


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

    return RuntimeUnderTest(name, adapter, TEST_IMAGE, held, leftovers, adapter.close)


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
    probe = rut.runtime.probe()
    require(name, probe.available, probe.reason)
    try:
        yield rut
    finally:
        left = rut.leftovers()
        rut.close()
        assert not left, f"{name}: left behind: {left}"


def resolve_identity(rut: RuntimeUnderTest) -> RuntimeIdentity:
    try:
        return rut.runtime.resolve(rut.image)
    except RuntimeUnavailable as exc:
        require(rut.name, False, f"{exc.message} (test image: scripts/build-test-image.sh)")
        raise


@contextlib.contextmanager
def scratch_root(prefix: str) -> Iterator[Path]:
    """A short directory under /tmp that the server user (native: `postgres`) can traverse."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def make_template(rut: RuntimeUnderTest, identity: RuntimeIdentity, root: Path) -> Path:
    """One initdb per runtime and module; each test's server runs on a copy (like a clone)."""
    data = root / f"tpl-{rut.name}"
    data.mkdir()
    rut.runtime.initdb(identity, data, ["--no-sync", "-E", "UTF8"])
    (data / "pg_hba.conf").write_text(PG_HBA)
    os.chown(data / "pg_hba.conf", identity.server_uid or 0, identity.server_gid or 0)
    return data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postmaster_status(data_dir: Path) -> str | None:
    """Line 8 of postmaster.pid ("ready", "stopping", ...), None when there is no such file."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[7].strip() if len(lines) > 7 else ""


class Server:
    """One instance under test: its spec, its runtime reference, and helpers to reach it."""

    def __init__(self, runtime: Runtime, spec: InstanceSpec):
        self.runtime = runtime
        self.spec = spec
        self.ref = ""

    def start(self) -> None:
        """Start and wait until postmaster.pid says ready (as the engine does)."""
        self.ref = self.runtime.start(self.spec)
        deadline = time.monotonic() + READY_TIMEOUT
        while postmaster_status(self.spec.data_dir) != "ready":
            if time.monotonic() > deadline or not self.runtime.is_running(self.spec, self.ref):
                pytest.fail(f"server did not become ready; log:\n{self.log()[-3000:]}")
            time.sleep(0.005)

    def stop(self) -> None:
        self.runtime.stop(self.spec, self.ref)

    def log(self) -> str:
        return (self.spec.run_dir / "postgres.log").read_text(errors="replace")

    def connect(self, **kwargs: object) -> psycopg.Connection:
        params: dict[str, object] = {
            "host": str(self.spec.run_dir),
            "port": self.spec.port,
            "user": "postgres",
            "dbname": "postgres",
            "autocommit": True,
            "connect_timeout": 10,
        }
        params.update(kwargs)
        return psycopg.connect(**params)  # type: ignore[arg-type]

    def run(
        self, tool: Literal["psql", "pgbench"], *args: str, cancel: threading.Event | None = None
    ) -> tuple[int, str, str, list[tuple[str, bytes]]]:
        """exec_tool: (exit code, stdout, stderr, the chunks as they came)."""
        chunks: list[tuple[str, bytes]] = []
        code = self.runtime.exec_tool(
            self.spec, self.ref, tool, list(args), lambda kind, data: chunks.append((kind, data)), cancel
        )
        out = b"".join(d for k, d in chunks if k == "stdout").decode()
        err = b"".join(d for k, d in chunks if k == "stderr").decode()
        return code, out, err, chunks

    def script(self, name: str, text: str) -> str:
        """Write a script into the instance's scripts dir; the path the tools see it under."""
        path = self.spec.scripts_dir / name
        path.write_text(text)
        os.chmod(path, 0o644)
        return self.runtime.tool_path(self.spec, path)


class Servers:
    """Makes servers on copies of the template; stops and discards them all at the end and checks
    the runtime holds nothing for any of them."""

    def __init__(self, rut: RuntimeUnderTest, identity: RuntimeIdentity, template: Path, root: Path):
        self.rut, self.identity, self.template, self.root = rut, identity, template, root
        self.made: list[Server] = []

    def make(self, settings: dict[str, str] | None = None) -> Server:
        key = uuid.uuid4().hex[:8]
        base = self.root / key
        base.mkdir()
        data = base / "d"
        subprocess.run(["cp", "-a", str(self.template), str(data)], check=True)
        spec = InstanceSpec(
            instance_id=f"t-{key}",
            data_dir=data,
            run_dir=base / "r",
            port=free_port(),
            identity=self.identity,
            settings=settings if settings is not None else {"fsync": "off", "max_connections": "20"},
        )
        self.rut.runtime.prepare_run_dir(self.identity, spec.run_dir)
        server = Server(self.rut.runtime, spec)
        self.made.append(server)
        return server

    def close(self) -> None:
        runtime, held = self.rut.runtime, []
        for server in self.made:
            if server.ref:
                try:
                    runtime.stop(server.spec, server.ref, timeout=10)
                finally:
                    runtime.discard(server.spec, server.ref)
            held += self.rut.held(server.spec, server.ref)
        assert not held, f"{self.rut.name} still holds: {held}"


def server_fixtures(prefix: str) -> tuple[object, object, object, object]:
    """The module-scoped `root`, `identity`, `template` and the per-test `servers` fixtures a
    runtime test module needs besides its own `rut` (bind them to those names in the module)."""

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
