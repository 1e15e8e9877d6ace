"""The Runtime contract (sqlrs/ports/runtime.py) as a suite another package runs on its adapter.

Two classes to subclass in a test module (their names do not start with `Test`, so pytest
collects only the subclass):

- `RuntimeContract`: what the services rely on, kept by any adapter, a fake one too: probe and
  identity, run directory, initdb, the server lifecycle as `postmaster.pid` shows it (start,
  stop, discard, a second server on a data directory refused, servers outliving their adapter),
  a tool run on a server seeing the scripts directory.
- `PostgresRuntimeContract`: all that, and what a real PostgreSQL behind the adapter does: the
  Unix socket and TCP as promised (scram, 127.0.0.1 only), settings, clean shutdown and restart,
  psql and pgbench with their exit codes, streams, environment and cancellation.

The subclass gives one class-scoped fixture, `rut`, yielding a `RuntimeUnderTest`::

    import pytest
    from sqlrs.testing.runtime import PostgresRuntimeContract, RuntimeUnderTest, host_processes

    def make() -> RuntimeUnderTest:
        return RuntimeUnderTest("mine", MyRuntime(), image=None, held=host_processes, reopen=make)

    class TestMyRuntime(PostgresRuntimeContract):
        @pytest.fixture(scope="class")
        @classmethod
        def rut(cls):
            yield make()

No engine and no mocks: the adapter makes a real cluster with `initdb` (once per class), and each
test runs servers on copies of it under a short directory in /tmp. Everything the tests start is
stopped and discarded at the end, and a test fails when the runtime still holds anything of it
(`RuntimeUnderTest.held`). Needs pytest and psycopg (`pip install sqlrs[testing]`).

The pieces they run on (`RuntimeUnderTest`, `Servers`, `opened`, `runtime_context`, ...) live in
`sqlrs.testing.runtime_servers` and are importable from here too.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from sqlrs.domain.errors import RuntimeFailure
from sqlrs.ports.runtime import InstanceSpec, Runtime, RuntimeIdentity
from sqlrs.testing.runtime_servers import (
    RuntimeServers,
    RuntimeUnderTest,
    Server,
    Servers,
    free_port,
    host_addresses,
    host_processes,
    make_template,
    opened,
    postmaster_status,
    processes_mentioning,
    resolve_identity,
    runtime_context,
    scratch_root,
)

# the suites, and the pieces a package's own runtime tests use (examples/runtime-plugin, docs/extending.md)
__all__ = [
    "PostgresRuntimeContract", "RuntimeContract", "RuntimeServers", "RuntimeUnderTest", "Server", "Servers",
    "host_processes", "make_template", "opened", "postmaster_status", "processes_mentioning", "resolve_identity",
    "runtime_context", "scratch_root",
]


class RuntimeContract(RuntimeServers):
    """The Runtime port's promises that the services rely on; a fake adapter keeps them too."""

    def assert_serves(self, server: Server) -> None:
        """What is checked of a started server beyond `is_running` (PostgresRuntimeContract: that
        it answers a query, over the socket and through the tools)."""
        assert server.runtime.is_running(server.spec, server.ref)

    # --- probe and resolve ----------------------------------------------------------------------

    def test_probe_answers_with_its_name(self, runtime: Runtime) -> None:
        probe = runtime.probe()
        assert probe.available and probe.name == runtime.name and probe.reason.strip()

    def test_resolve_identifies_what_runs_stably(self, rut: RuntimeUnderTest, identity: RuntimeIdentity) -> None:
        assert identity.runtime == rut.name == rut.runtime.name
        assert identity.identity and identity.description
        assert identity.version.startswith("PostgreSQL ") and identity.version.split()[1][0].isdigit()
        assert identity.image == rut.image
        assert (identity.image is not None) == rut.runtime.needs_image  # an image exactly when one is needed
        assert isinstance(identity.server_uid, int) and isinstance(identity.server_gid, int)
        if os.geteuid() == 0:
            assert identity.server_uid > 0  # PostgreSQL never runs as root
        assert rut.runtime.resolve(rut.image) == identity
        # a new adapter (an engine restart) identifies the same thing: the identity is hashed into ids
        fresh = rut.reopen()
        try:
            assert fresh.runtime.resolve(rut.image) == identity
        finally:
            fresh.close()

    # --- run dir and initdb ---------------------------------------------------------------------

    def test_prepare_run_dir_is_idempotent_and_for_the_server_user(
        self, runtime: Runtime, identity: RuntimeIdentity, root: Path
    ) -> None:
        run_dir = root / f"prep-{runtime.name}" / "r"
        runtime.prepare_run_dir(identity, run_dir)
        (run_dir / "scripts" / "kept.sql").write_text("select 1;\n")
        runtime.prepare_run_dir(identity, run_dir)
        assert (run_dir / "scripts" / "kept.sql").read_text() == "select 1;\n"
        if os.geteuid() == 0:
            assert run_dir.stat().st_uid == identity.server_uid

    def test_initdb_makes_a_cluster_owned_by_the_server_user(self, identity: RuntimeIdentity,
                                                             template: Path) -> None:
        stat = template.stat()
        assert (stat.st_uid, stat.st_gid) == (identity.server_uid, identity.server_gid)
        assert stat.st_mode & 0o777 == 0o700
        assert (template / "PG_VERSION").read_text().strip() == identity.version.split()[1].split(".")[0]
        assert (template / "global" / "pg_control").exists()
        assert not (template / "postmaster.pid").exists()

    def test_initdb_failure_is_a_runtime_failure_with_the_log(
        self, runtime: Runtime, identity: RuntimeIdentity, root: Path
    ) -> None:
        data = root / f"bad-initdb-{runtime.name}"
        data.mkdir()
        with pytest.raises(RuntimeFailure, match="initdb failed") as caught:
            runtime.initdb(identity, data, ["--no-such-initdb-option"])
        assert "no-such-initdb-option" in str(caught.value.details.get("log", ""))

    # --- servers --------------------------------------------------------------------------------

    def test_server_lifecycle(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        spec = server.spec
        server.start()
        assert runtime.is_running(spec, server.ref)
        self.assert_serves(server)

        # stopped: no postmaster.pid left (a later start needs no crash recovery)
        server.stop()
        assert not runtime.is_running(spec, server.ref)
        assert postmaster_status(spec.data_dir) is None
        server.stop()  # idempotent

        # released, then started again on the same data dir
        runtime.discard(spec, server.ref)
        first_ref = server.ref
        runtime.stop(spec, first_ref)  # gone: nothing to do
        runtime.discard(spec, first_ref)  # idempotent
        assert not runtime.is_running(spec, first_ref)
        server.start()
        assert server.ref != first_ref
        self.assert_serves(server)

    def test_start_refuses_a_data_dir_a_server_runs_on(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        twin = InstanceSpec(
            instance_id=server.spec.instance_id + "-twin",
            data_dir=server.spec.data_dir,
            run_dir=server.spec.run_dir,
            port=free_port(),
            identity=server.spec.identity,
        )
        with pytest.raises(RuntimeFailure, match="already runs a server"):
            runtime.start(twin)
        assert runtime.is_running(server.spec, server.ref)
        self.assert_serves(server)  # the first server is untouched

    def test_discard_leaves_nothing(self, rut: RuntimeUnderTest, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        assert rut.held(server.spec, server.ref), "the running server is not seen"
        runtime.discard(server.spec, server.ref)  # a running server: released all the same
        assert rut.held(server.spec, server.ref) == []
        assert not runtime.is_running(server.spec, server.ref)
        runtime.discard(server.spec, server.ref)  # idempotent
        runtime.stop(server.spec, server.ref)  # gone: nothing to do

    def test_tool_runs_a_script_from_the_scripts_dir(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        visible = server.script("sub/step.sql", "select 1;\n")
        code, _, err, _ = server.run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", visible)
        assert code == 0, err

    def test_server_survives_its_runtime_adapter(self, rut: RuntimeUnderTest, servers: Servers) -> None:
        """The server outlives the adapter that started it (the engine): a new adapter sees it,
        runs tools on it and stops it."""
        server = servers.make()
        server.start()
        fresh = rut.reopen()
        try:
            assert fresh.runtime.is_running(server.spec, server.ref)
            server.runtime = fresh.runtime
            self.assert_serves(server)
            fresh.runtime.stop(server.spec, server.ref)
            assert not fresh.runtime.is_running(server.spec, server.ref)
            assert postmaster_status(server.spec.data_dir) is None
            fresh.runtime.discard(server.spec, server.ref)
        finally:
            fresh.close()


class PostgresRuntimeContract(RuntimeContract):
    """Every promise of the Runtime port, on a real PostgreSQL."""

    def assert_serves(self, server: Server) -> None:
        super().assert_serves(server)
        with server.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        code, out, err, _ = server.run("psql", "-X", "-At", "-c", "select 7")
        assert code == 0 and out.strip() == "7", err

    def test_server_serves_as_promised(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        spec = server.spec
        server.start()
        assert (spec.run_dir / f".s.PGSQL.{spec.port}").is_socket()

        # over the Unix socket in the run dir, as `postgres`, without a password
        with server.connect() as conn:
            assert conn.execute("select current_setting('port')").fetchone() == (str(spec.port),)
            assert conn.execute("select current_setting('fsync')").fetchone() == ("off",)  # spec.settings
            assert conn.execute("select current_setting('server_encoding')").fetchone() == ("UTF8",)  # initdb -E
            conn.execute("alter role postgres password 'secret-pw'")
            conn.execute("create table kept(v int); insert into kept values (42)")

        # over TCP on 127.0.0.1, with scram; never trusted, never on other addresses
        with server.connect(host="127.0.0.1", password="secret-pw") as conn:
            assert conn.execute("select inet_server_addr() is not null").fetchone() == (True,)
        for password in ("wrong", ""):
            with pytest.raises(psycopg.OperationalError):
                server.connect(host="127.0.0.1", password=password).close()
        for address in host_addresses():
            with socket.socket() as probe:
                probe.settimeout(1.0)
                assert probe.connect_ex((address, spec.port)) != 0, f"port {spec.port} reachable on {address}"

        # fast, clean shutdown: the log in the run dir says so
        server.stop()
        assert "database system is shut down" in server.log()

        # started again on the same data dir: the data is there, no crash recovery
        runtime.discard(spec, server.ref)
        log_size = len(server.log())
        server.start()
        with server.connect() as conn:
            assert conn.execute("select v from kept").fetchone() == (42,)
        restart_log = server.log()[log_size:]
        assert "not properly shut down" not in restart_log and "automatic recovery" not in restart_log

    # --- tools ----------------------------------------------------------------------------------

    def test_exec_tool_keeps_exit_code_and_streams(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        visible = server.script("step.sql", "select 'first' as a;\nselect 2;\nselect * from no_such_table;\n"
                                            "select 'never';\n")
        code, out, err, chunks = server.run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", visible)
        assert code == 3
        assert "first" in out and "never" not in out
        assert f"psql:{visible}:3: ERROR:" in err and "no_such_table" in err
        assert {kind for kind, _ in chunks} == {"stdout", "stderr"}
        # the connection comes from PGHOST/PGPORT/PGUSER/PGDATABASE; plain success is 0
        code, out, err, _ = server.run("psql", "-X", "-At", "-c",
                                       "select current_user, current_database(), current_setting('port')")
        assert code == 0, err
        assert out.strip() == f"postgres|postgres|{server.spec.port}"

    def test_exec_tool_passes_env_and_runs_pgbench(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        chunks: list[tuple[str, bytes]] = []
        code = runtime.exec_tool(
            server.spec,
            server.ref,
            "psql",
            ["-X", "-At", "-c", "select current_setting('application_name')"],
            lambda kind, data: chunks.append((kind, data)),
            env={"PGAPPNAME": "sqlrs-test"},
        )
        assert code == 0 and b"".join(d for _, d in chunks).strip() == b"sqlrs-test"
        code, _, err, _ = server.run("pgbench", "-i", "-s", "1", "-q")
        assert code == 0, err
        code, out, err, _ = server.run("pgbench", "-t", "20", "-c", "2")
        assert code == 0, err
        assert "number of transactions actually processed: 40" in out

    def test_exec_tool_cancel_kills_the_tool(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        for tool, args in (
            ("psql", ("-X", "-c", "select pg_sleep(120)")),
            ("pgbench", ("-n", "-T", "120", "-f", server.script("sleep.sql", "select pg_sleep(0.05);\n"))),
        ):
            cancel = threading.Event()
            timer = threading.Timer(1.0, cancel.set)
            timer.start()
            began = time.monotonic()
            try:
                code, _, _, _ = server.run(tool, *args, cancel=cancel)  # type: ignore[arg-type]
            finally:
                timer.cancel()
            assert code != 0, tool
            assert time.monotonic() - began < 60, f"{tool} outlived its cancel"  # it would run 120 s

    def test_tool_sees_the_scripts_dir(self, runtime: Runtime, servers: Servers) -> None:
        server = servers.make()
        server.start()
        inner = server.script("sub/inner.sql", "select 'inner';\n")
        outer = server.script("outer.sql", f"\\i {inner}\nselect 'outer';\n")
        code, out, err, _ = server.run("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-f", outer)
        assert code == 0, err
        assert out.split() == ["inner", "outer"]
