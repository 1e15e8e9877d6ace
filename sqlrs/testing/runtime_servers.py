"""What the runtime contract suites (sqlrs.testing.runtime) run on: the runtime under test, servers
on copies of one initdb'd template, and the class fixtures that make them.

Public through `sqlrs.testing.runtime`, which re-exports these names: a package that tests its own
runtime beyond the contract (examples/runtime-plugin) builds its tests from the same pieces.
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

from sqlrs.domain.config import lookup
from sqlrs.domain.errors import RuntimeUnavailable
from sqlrs.ports.runtime import InstanceSpec, Runtime, RuntimeContext, RuntimeIdentity
from sqlrs.testing.require import require, unavailable

PG_HBA = "local all all trust\nhost all all all scram-sha-256\n"
READY_TIMEOUT = 60.0


@dataclass
class RuntimeUnderTest:
    """One runtime adapter and what the tests need to know about it beyond the port."""

    name: str
    runtime: Runtime
    image: str | None  # what `resolve` is asked for (None for a runtime that needs no image)
    # What the runtime still holds for an instance (processes, containers), described for people;
    # asked through the OS or the runtime's own CLI, not through the adapter.
    held: Callable[[InstanceSpec, str], list[str]]
    # A new adapter of the same runtime, as an engine restart makes it.
    reopen: Callable[[], RuntimeUnderTest]
    # Everything left at the end of a class (after its servers were discarded): removes it and says
    # what it was.
    leftovers: Callable[[], list[str]] = field(default=lambda: [])
    close: Callable[[], None] = field(default=lambda: None)


def runtime_context(state_dir: Path, settings: dict[str, object] | None = None,
                    labels: dict[str, str] | None = None) -> RuntimeContext:
    """What the engine of `state_dir` would give a `RuntimePlugin.make`: config defaults,
    overridden by `settings` (e.g. {"runtime.native.pg_bin": "embedded:16"})."""
    given = dict(settings or {})

    def setting(key: str) -> object:
        return given[key] if key in given else lookup(key).default

    return RuntimeContext(state_dir=state_dir, binaries_dir=state_dir / "pg", labels=dict(labels or {}),
                          setting=setting)


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of this host's processes whose command line contains `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline and int(entry) != os.getpid():
            found.append((int(entry), cmdline.strip()))
    return found


def host_processes(spec: InstanceSpec, ref: str) -> list[str]:
    """`RuntimeUnderTest.held` of a runtime whose servers are processes on this host: a postmaster
    names its data directory on its command line, and its children die with it."""
    return [f"pid {pid}: {cmdline}" for pid, cmdline in processes_mentioning(str(spec.data_dir))]


@contextlib.contextmanager
def opened(rut: RuntimeUnderTest) -> Iterator[RuntimeUnderTest]:
    """`rut`, probed: skipped when unavailable (failed when SQLRS_REQUIRE names it). At the end,
    fails when anything of it is left (after removing it)."""
    probe = rut.runtime.probe()
    try:
        require(rut.name, probe.available, probe.reason)
        yield rut
    finally:
        left = rut.leftovers()
        rut.close()
        assert not left, f"{rut.name}: left behind: {left}"


def resolve_identity(rut: RuntimeUnderTest) -> RuntimeIdentity:
    try:
        return rut.runtime.resolve(rut.image)
    except RuntimeUnavailable as exc:
        unavailable(rut.name, exc.message)


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
    """One initdb per runtime and class; each test's server runs on a copy (like a clone)."""
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
        try:
            return (self.spec.run_dir / "postgres.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no postgres.log)"

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
        """Write a script into the instance's scripts dir (`name` may name a subdirectory); the path
        the tools see it under."""
        path = self.spec.scripts_dir / name
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            os.chmod(path.parent, 0o755)
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


def host_addresses() -> list[str]:
    """This host's non-loopback IPv4 addresses (eth0, docker0, podman bridges...)."""
    found: set[str] = set()
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            found.add(fields[fields.index("inet") + 1].split("/")[0])
    return sorted(a for a in found if not a.startswith("127."))


class RuntimeServers:
    """The fixtures every runtime test class needs besides its own `rut`: a scratch root, the
    identity, an initdb'd template, and the per-test `servers`."""

    root_prefix = "sqlrs-rc-"

    @pytest.fixture(scope="class")
    @classmethod
    def runtime(cls, rut: RuntimeUnderTest) -> Runtime:
        return rut.runtime

    @pytest.fixture(scope="class")
    @classmethod
    def root(cls) -> Iterator[Path]:
        with scratch_root(cls.root_prefix) as path:
            yield path

    @pytest.fixture(scope="class")
    @classmethod
    def identity(cls, rut: RuntimeUnderTest) -> RuntimeIdentity:
        return resolve_identity(rut)

    @pytest.fixture(scope="class")
    @classmethod
    def template(cls, rut: RuntimeUnderTest, identity: RuntimeIdentity, root: Path) -> Path:
        return make_template(rut, identity, root)

    @pytest.fixture
    def servers(self, rut: RuntimeUnderTest, identity: RuntimeIdentity, template: Path,
                root: Path) -> Iterator[Servers]:
        made = Servers(rut, identity, template, root)
        try:
            yield made
        finally:
            made.close()
