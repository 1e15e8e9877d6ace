"""The docker and podman runtime adapters against real daemons and a real PostgreSQL image.

No mocks: every test runs real containers of `SQLRS_TEST_IMAGE` (default
`localhost/sqlrs-test-postgres:16`, built by `scripts/build-test-image.sh`; the daemons come from
`scripts/services.sh`). A runtime that is not available skips its tests, or fails them when
`SQLRS_REQUIRE` names it (see `_require.py`). Paths stay short: Unix socket paths must fit in
~100 characters.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from _require import require  # tests/integration is on sys.path (no __init__.py)

from sqlrs.adapters.containers.images import ImageInfo, content_digest, normalize_repository
from sqlrs.adapters.containers.layout import LABEL_INSTANCE, SCRIPTS_DIR
from sqlrs.adapters.containers.runtime import ContainerRuntime
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable
from sqlrs.ports.runtime import InstanceSpec, Runtime, RuntimeIdentity

IMAGE = os.environ.get("SQLRS_TEST_IMAGE", "localhost/sqlrs-test-postgres:16")
RUN_LABELS = {"sqlrs.test": f"containers-{uuid.uuid4().hex[:12]}"}
PG_HBA = "local all all trust\nhost all all all scram-sha-256\n"
READY_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(600)


def make_runtime(name: str) -> ContainerRuntime:
    if name == "docker":
        from sqlrs.adapters.containers.docker import DockerRuntime

        return DockerRuntime(labels=RUN_LABELS)
    from sqlrs.adapters.containers.podman import PodmanRuntime

    return PodmanRuntime(labels=RUN_LABELS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def host_addresses() -> list[str]:
    """This host's non-loopback IPv4 addresses (eth0, docker0, podman bridges...)."""
    found: set[str] = set()
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            fields = line.split()
            if "inet" in fields:
                found.add(fields[fields.index("inet") + 1].split("/")[0])
    except FileNotFoundError:
        pass
    with contextlib.suppress(OSError):
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return sorted(a for a in found if not a.startswith("127."))


def postmaster_status(data_dir: Path) -> str | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[7].strip() if len(lines) > 7 else ""


def cli_inspect(runtime: Runtime, ref: str) -> dict:
    out = subprocess.run([runtime.name, "inspect", ref], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def cli_container_ids(runtime: Runtime, label: str) -> list[str]:
    out = subprocess.run(
        [runtime.name, "ps", "-a", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


class Server:
    """One instance under test: its spec, its container, and helpers to reach it."""

    def __init__(self, runtime: ContainerRuntime, spec: InstanceSpec):
        self.runtime = runtime
        self.spec = spec
        self.ref = ""

    def start(self) -> float:
        """Start and wait until postmaster.pid says ready; the seconds it took."""
        began = time.monotonic()
        self.ref = self.runtime.start(self.spec)
        deadline = began + READY_TIMEOUT
        while postmaster_status(self.spec.data_dir) != "ready":
            if time.monotonic() > deadline or not self.runtime.is_running(self.spec, self.ref):
                log = (self.spec.run_dir / "postgres.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"server did not become ready; log:\n{log}")
            time.sleep(0.005)
        return time.monotonic() - began

    def stop(self) -> float:
        began = time.monotonic()
        self.runtime.stop(self.spec, self.ref)
        return time.monotonic() - began

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
        chunks: list[tuple[str, bytes]] = []
        code = self.runtime.exec_tool(
            self.spec,
            self.ref,
            tool,
            list(args),
            lambda kind, data: chunks.append((kind, data)),
            cancel,
        )
        out = b"".join(d for k, d in chunks if k == "stdout").decode()
        err = b"".join(d for k, d in chunks if k == "stderr").decode()
        return code, out, err, chunks


# ------------------------------------------------------------------------------ fixtures ----
@pytest.fixture(scope="module")
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sqlrs-ct-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["docker", "podman"])
def runtime(request: pytest.FixtureRequest) -> Iterator[ContainerRuntime]:
    name = request.param
    try:
        adapter = make_runtime(name)
    except ImportError as exc:
        require(name, False, f"SDK missing: {exc}")
        raise
    probe = adapter.probe()
    require(name, probe.available, probe.reason)
    yield adapter
    for container in adapter.leftovers(RUN_LABELS):
        adapter.remove_container(container)
    close = getattr(adapter, "close", None)
    if close:
        close()


@pytest.fixture(scope="module")
def identity(runtime: ContainerRuntime) -> RuntimeIdentity:
    try:
        return runtime.resolve(IMAGE)
    except RuntimeUnavailable as exc:
        require(runtime.name, False, f"test image: {exc.message} (build it: scripts/build-test-image.sh)")
        raise


@pytest.fixture(scope="module")
def template(runtime: ContainerRuntime, identity: RuntimeIdentity, tmp_root: Path) -> Path:
    """One initdb per runtime; each test works on a copy (like a snapshot clone)."""
    data = tmp_root / f"tpl-{runtime.name}"
    data.mkdir()
    runtime.initdb(identity, data, ["--no-sync", "-E", "UTF8"])
    (data / "pg_hba.conf").write_text(PG_HBA)
    os.chown(data / "pg_hba.conf", identity.server_uid or 0, identity.server_gid or 0)
    return data


@pytest.fixture
def make_server(
    runtime: ContainerRuntime, identity: RuntimeIdentity, template: Path, tmp_root: Path
) -> Iterator[Callable[[], Server]]:
    made: list[Server] = []

    def make() -> Server:
        key = uuid.uuid4().hex[:8]
        base = tmp_root / key
        base.mkdir()
        data = base / "d"
        subprocess.run(["cp", "-a", str(template), str(data)], check=True)
        spec = InstanceSpec(
            instance_id=f"t-{key}",
            data_dir=data,
            run_dir=base / "r",
            port=free_port(),
            identity=identity,
            settings={"fsync": "off", "max_connections": "20"},
        )
        runtime.prepare_run_dir(identity, spec.run_dir)
        server = Server(runtime, spec)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.ref:
            try:
                runtime.stop(server.spec, server.ref, timeout=10)
            finally:
                runtime.discard(server.spec, server.ref)


# ------------------------------------------------------------------------------ tests -------
def test_probe_answers(runtime: ContainerRuntime) -> None:
    probe = runtime.probe()
    assert probe.available and probe.name == runtime.name
    assert runtime.name in probe.reason


def test_probe_of_a_dead_endpoint_says_why(runtime: ContainerRuntime, tmp_root: Path) -> None:
    dead = type(runtime)(base_url=f"unix://{tmp_root}/no-daemon.sock")  # type: ignore[call-arg]
    began = time.monotonic()
    probe = dead.probe()
    assert time.monotonic() - began < 5
    assert not probe.available
    assert f"{runtime.name}: daemon at unix://{tmp_root}/no-daemon.sock does not answer" in probe.reason


def test_resolve_gives_image_identity_and_version(
    runtime: ContainerRuntime, identity: RuntimeIdentity
) -> None:
    assert identity.runtime == runtime.name
    assert (
        identity.identity.startswith("image:sha256:") and len(identity.identity) == len("image:sha256:") + 64
    )
    assert identity.version.startswith("PostgreSQL ") and identity.version.split()[1][0].isdigit()
    assert identity.image == IMAGE
    assert isinstance(identity.server_uid, int) and identity.server_uid > 0
    assert isinstance(identity.server_gid, int)
    began = time.monotonic()
    assert runtime.resolve(IMAGE) == identity  # facts are cached per image id
    assert time.monotonic() - began < 1.0


def test_identity_is_the_same_in_docker_and_podman() -> None:
    identities = {}
    for name in ("docker", "podman"):
        adapter = make_runtime(name)
        probe = adapter.probe()
        require(name, probe.available, probe.reason)
        try:
            identities[name] = adapter.resolve(IMAGE).identity
        except RuntimeUnavailable as exc:
            require(name, False, exc.message)
    assert identities["docker"] == identities["podman"]


def test_missing_image_is_a_clear_error(runtime: ContainerRuntime) -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        runtime.resolve("localhost/sqlrs-no-such-image:0")
    assert "localhost/sqlrs-no-such-image:0" in caught.value.message
    assert caught.value.hint and "pull" in caught.value.hint and "--image" in caught.value.hint


def test_content_digest_rules() -> None:
    assert normalize_repository("postgres:17") == "docker.io/library/postgres"
    assert normalize_repository("localhost/x:1") == "localhost/x"
    assert normalize_repository("localhost:5000/a/b@sha256:00") == "localhost:5000/a/b"
    local = ImageInfo(id="sha256:" + "a" * 64, repo_digests=("localhost/x@sha256:" + "b" * 64,))
    assert content_digest("localhost/x:1", local) == "sha256:" + "a" * 64
    pulled = ImageInfo(
        id="sha256:" + "a" * 64,
        repo_digests=(
            "docker.io/library/postgres@sha256:" + "c" * 64,
            "docker.io/library/postgres@sha256:" + "d" * 64,
        ),
        manifest_digest="sha256:" + "c" * 64,
    )
    assert content_digest("postgres:17", pulled) == "sha256:" + "d" * 64  # the list digest
    assert content_digest("postgres@sha256:" + "e" * 64, pulled) == "sha256:" + "e" * 64


def test_initdb_leaves_a_cluster_owned_by_the_server_user(identity: RuntimeIdentity, template: Path) -> None:
    stat = template.stat()
    assert (stat.st_uid, stat.st_gid) == (identity.server_uid, identity.server_gid)
    assert stat.st_mode & 0o777 == 0o700
    assert (template / "PG_VERSION").read_text().strip() == identity.version.split()[1].split(".")[0]
    assert (template / "global" / "pg_control").exists()


def test_prepare_run_dir(runtime: ContainerRuntime, identity: RuntimeIdentity, tmp_root: Path) -> None:
    run_dir = tmp_root / "prep" / "r"
    runtime.prepare_run_dir(identity, run_dir)
    runtime.prepare_run_dir(identity, run_dir)  # idempotent
    assert (run_dir / "scripts").is_dir()
    assert run_dir.stat().st_uid == identity.server_uid


def test_server_lifecycle(runtime: ContainerRuntime, make_server: Callable[[], Server]) -> None:
    server = make_server()
    spec = server.spec
    ready_after = server.start()
    print(f"\n{runtime.name}: create+start to ready {ready_after:.3f}s")
    assert runtime.is_running(spec, server.ref)
    assert (spec.run_dir / f".s.PGSQL.{spec.port}").is_socket()

    # over the host Unix socket, without a password
    with server.connect() as conn:
        assert conn.execute("select current_setting('port')").fetchone() == (str(spec.port),)
        assert conn.execute("select current_setting('fsync')").fetchone() == ("off",)
        conn.execute("alter role postgres password 'secret-pw'")
        conn.execute("create table kept(v int); insert into kept values (42)")

    # over TCP on 127.0.0.1, with scram
    with server.connect(host="127.0.0.1", password="secret-pw") as conn:
        assert conn.execute("select inet_server_addr() is not null").fetchone() == (True,)
    for password in ("wrong", ""):  # never trust over TCP
        with pytest.raises(psycopg.OperationalError):
            server.connect(host="127.0.0.1", password=password).close()

    # published on loopback only
    info = cli_inspect(runtime, server.ref)
    bindings = info["NetworkSettings"]["Ports"][f"{spec.port}/tcp"]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    assert all(b["HostPort"] == str(spec.port) for b in bindings)
    for address in host_addresses():
        with socket.socket() as probe:
            probe.settimeout(1.0)
            assert probe.connect_ex((address, spec.port)) != 0, f"port {spec.port} reachable on {address}"
    # labels and mounts that let leftovers be found and keep scripts read-only
    assert info["Config"]["Labels"][LABEL_INSTANCE] == spec.instance_id
    assert info["Config"]["Labels"]["sqlrs.test"] == RUN_LABELS["sqlrs.test"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[SCRIPTS_DIR]["RW"] is False
    assert mounts["/var/lib/postgresql/data"]["RW"] is True

    # clean, fast shutdown
    stopped_after = server.stop()
    print(f"{runtime.name}: stop {stopped_after:.3f}s")
    assert not runtime.is_running(spec, server.ref)
    assert not (spec.data_dir / "postmaster.pid").exists()
    assert "database system is shut down" in (spec.run_dir / "postgres.log").read_text()
    server.stop()  # idempotent
    runtime.stop(spec, "0" * 64)  # a container that never existed is fine too

    # restart on the same data dir: a new container, the data is there, no crash recovery
    runtime.discard(spec, server.ref)
    log_size = (spec.run_dir / "postgres.log").stat().st_size
    first_ref = server.ref
    server.start()
    assert server.ref != first_ref
    with server.connect() as conn:
        assert conn.execute("select v from kept").fetchone() == (42,)
    restart_log = (spec.run_dir / "postgres.log").read_text()[log_size:]
    assert "not properly shut down" not in restart_log and "automatic recovery" not in restart_log


def test_start_refuses_a_second_server_on_the_same_data_dir(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
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


def test_restart_after_the_container_was_removed_by_hand(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
    server.start()
    with server.connect() as conn:
        conn.execute("create table t(v text); insert into t values ('survives')")
        conn.execute("checkpoint")
    # a crash, then a clean-up by hand (podman's `rm -f` alone would stop it gracefully first)
    subprocess.run([runtime.name, "kill", "-s", "KILL", server.ref], check=True, capture_output=True)
    subprocess.run([runtime.name, "rm", "-f", server.ref], check=True, capture_output=True)
    assert not runtime.is_running(server.spec, server.ref)
    runtime.stop(server.spec, server.ref)  # gone: nothing to do
    runtime.discard(server.spec, server.ref)  # gone: nothing to do
    assert postmaster_status(server.spec.data_dir) is not None  # stale lock of the killed server
    server.start()
    with server.connect() as conn:
        assert conn.execute("select v from t").fetchone() == ("survives",)


def test_discard_leaves_no_container(runtime: ContainerRuntime, make_server: Callable[[], Server]) -> None:
    server = make_server()
    server.start()
    label = f"{LABEL_INSTANCE}={server.spec.instance_id}"
    assert cli_container_ids(runtime, label)
    runtime.discard(server.spec, server.ref)  # running: removed by force
    assert cli_container_ids(runtime, label) == []
    assert runtime.leftovers({LABEL_INSTANCE: server.spec.instance_id}) == []
    assert not runtime.is_running(server.spec, server.ref)
    runtime.discard(server.spec, server.ref)  # idempotent


def test_exec_tool_psql_script_error_keeps_exit_code_and_line(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
    server.start()
    script = server.spec.scripts_dir / "step.sql"
    script.write_text("select 'first' as a;\nselect 2;\nselect * from no_such_table;\nselect 'never';\n")
    os.chmod(script, 0o644)
    visible = runtime.tool_path(server.spec, script)
    assert visible == f"{SCRIPTS_DIR}/step.sql"
    code, out, err, chunks = server.run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", visible)
    assert code == 3
    assert "first" in out and "never" not in out
    assert f"psql:{visible}:3: ERROR:" in err and "no_such_table" in err
    assert {kind for kind, _ in chunks} == {"stdout", "stderr"}
    # the mount is read-only for the tools
    code, _, err, _ = server.run("psql", "-X", "-c", f"\\o {SCRIPTS_DIR}/out.txt")
    assert not (server.spec.scripts_dir / "out.txt").exists()
    # environment: connection through PGHOST/PGPORT; plain success is 0
    code, out, _, _ = server.run("psql", "-X", "-At", "-c", "select current_user, current_setting('port')")
    assert code == 0 and out.strip() == f"postgres|{server.spec.port}"


def test_exec_tool_passes_env_and_runs_pgbench(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
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


def test_exec_tool_cancel_kills_the_tool_promptly(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
    server.start()
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    began = time.monotonic()
    code, _, _, _ = server.run(
        "psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "select pg_sleep(60)", cancel=cancel
    )
    elapsed = time.monotonic() - began
    print(f"\n{runtime.name}: cancelled after {elapsed:.2f}s (exit {code})")
    assert code != 0
    assert elapsed < 10
    with server.connect() as conn:
        deadline = time.monotonic() + 10
        while conn.execute(
            "select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' "
            "and pid <> pg_backend_pid()"
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the cancelled query still runs"
            time.sleep(0.1)
    # pgbench is killed too
    script = server.spec.scripts_dir / "sleep.sql"
    script.write_text("select pg_sleep(0.05);\n")
    os.chmod(script, 0o644)
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    began = time.monotonic()
    code, _, _, _ = server.run(
        "pgbench", "-n", "-T", "60", "-f", runtime.tool_path(server.spec, script), cancel=cancel
    )
    assert code != 0
    assert time.monotonic() - began < 10


def test_exec_tool_on_a_stopped_instance_is_a_runtime_failure(
    runtime: ContainerRuntime, make_server: Callable[[], Server]
) -> None:
    server = make_server()
    server.start()
    server.stop()
    with pytest.raises(RuntimeFailure, match="not running"):
        server.run("psql", "-X", "-c", "select 1")


def test_tool_path_maps_only_the_scripts_dir(runtime: ContainerRuntime, identity: RuntimeIdentity) -> None:
    spec = InstanceSpec(
        instance_id="x", data_dir=Path("/tmp/d"), run_dir=Path("/tmp/r"), port=5432, identity=identity
    )
    assert runtime.tool_path(spec, Path("/tmp/r/scripts/a/b.sql")) == f"{SCRIPTS_DIR}/a/b.sql"
    with pytest.raises(RuntimeFailure):
        runtime.tool_path(spec, Path("/etc/passwd"))
