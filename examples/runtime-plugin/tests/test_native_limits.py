"""sqlrs' runtime contract (sqlrs.testing.runtime) on the installed `native-limits` runtime, with
real PostgreSQL servers, and the limits themselves as the kernel reports them."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlrs_native_limits import NAME, LimitedNativeRuntime, Limits

from sqlrs.ports.runtime import Runtime, RuntimePlugin
from sqlrs.testing.runtime import (
    PostgresRuntimeContract,
    RuntimeUnderTest,
    Servers,
    host_processes,
    opened,
    runtime_context,
    scratch_root,
)


def plugin() -> RuntimePlugin:
    """The runtime as sqlrs finds it: through its entry point."""
    (found,) = [ep for ep in entry_points(group="sqlrs.runtimes") if ep.name == NAME]
    loaded = found.load()
    assert isinstance(loaded, RuntimePlugin) and loaded.name == NAME
    return loaded


def make_runtime(state_dir: Path) -> Runtime:
    # a root engine runs servers as `postgres` (sqlrs' default runtime.native.user)
    return plugin().make(runtime_context(state_dir))


def under_test(state_dir: Path) -> RuntimeUnderTest:
    return RuntimeUnderTest(NAME, make_runtime(state_dir), None, host_processes,
                            reopen=lambda: under_test(state_dir))


def state_dir() -> contextlib.AbstractContextManager[Path]:
    """Where the runtime may copy PostgreSQL binaries for the server user: traversable by it."""
    return scratch_root("sqlrs-limits-")


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def limit(pid: int, what: str) -> tuple[str, str]:
    """(soft, hard) of one line of /proc/PID/limits, e.g. "Max address space"."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith(what))
    soft, hard = line[len(what):].split()[:2]
    return soft, hard


class TestNativeLimits(PostgresRuntimeContract):
    root_prefix = "sqlrs-limits-rc-"

    @pytest.fixture(scope="class")
    @classmethod
    def rut(cls) -> Iterator[RuntimeUnderTest]:
        with state_dir() as path, opened(under_test(path)) as rut:
            yield rut

    def test_servers_run_under_the_limits(self, rut: RuntimeUnderTest, servers: Servers) -> None:
        server = servers.make()
        server.start()
        postmaster = int(server.ref)
        with server.connect() as conn:
            row = conn.execute("select pg_backend_pid()").fetchone()
            assert row is not None
            for pid in (postmaster, int(row[0])):  # the postmaster, and a backend it forked
                assert Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
                assert niceness(pid) == 10
                assert limit(pid, "Max address space") == (str(4 << 30), str(4 << 30))
                assert limit(pid, "Max core file size") == ("0", "0")
                io = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True, check=True)
                assert io.stdout.strip() == "best-effort: prio 7"
        assert rut.runtime.probe().reason.endswith("servers under nice 10, io best-effort:7, address space 4096 MiB")

    def test_a_runaway_query_fails_instead_of_eating_the_memory(self, rut: RuntimeUnderTest, servers: Servers,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SQLRS_LIMITS_MEMORY", "768M")
        monkeypatch.setenv("SQLRS_LIMITS_IO", "idle")
        with state_dir() as path:
            server = servers.make()
            server.runtime = make_runtime(path)
            server.start()
            try:
                assert limit(int(server.ref), "Max address space")[0] == str(768 << 20)
                io = subprocess.run(["ionice", "-p", server.ref], capture_output=True, text=True, check=True)
                assert io.stdout.strip() == "idle"
                # a hash aggregate allowed far more memory than the limit: it fails, the server lives on
                code, _, err, _ = server.run(
                    "psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "set work_mem = '8GB'", "-c",
                    "select count(*) from (select g, count(*) from generate_series(1, 40000000) g group by g) t")
                assert code != 0 and "out of memory" in err, err
                code, out, err, _ = server.run("psql", "-X", "-At", "-c", "select 1")
                assert code == 0 and out.strip() == "1", err
            finally:
                server.stop()


def test_limits_come_from_the_environment() -> None:
    assert Limits.from_environ({}) == Limits()
    limits = Limits.from_environ({"SQLRS_LIMITS_NICE": "19", "SQLRS_LIMITS_IO": "best-effort:3",
                                  "SQLRS_LIMITS_MEMORY": "none"})
    assert (limits.nice, limits.io_class, limits.io_level, limits.address_space) == (19, "best-effort", 3, None)
    for bad in ({"SQLRS_LIMITS_NICE": "20"}, {"SQLRS_LIMITS_IO": "realtime"}, {"SQLRS_LIMITS_IO": "idle:2"},
                {"SQLRS_LIMITS_MEMORY": "lots"}):
        with pytest.raises(ValueError):
            Limits.from_environ(bad)


def test_without_its_tools_it_says_what_is_missing() -> None:
    with state_dir() as path:
        native = plugin().make(runtime_context(path))
        assert isinstance(native, LimitedNativeRuntime)
        lacking = LimitedNativeRuntime(native.native, Limits(), missing=["prlimit"])
        probe = lacking.probe()
        assert not probe.available and re.search(r"prlimit not found", probe.reason)
