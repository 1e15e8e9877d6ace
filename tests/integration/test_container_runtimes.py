"""What only the docker and podman runtimes do, against real daemons and a real PostgreSQL image:
images and their identity, container labels, published ports, mounts, housekeeping, and the
in-container kill of a cancelled tool. The promises every runtime keeps are in
test_runtime_contract.py.

No mocks: every test runs real containers of `SQLRS_TEST_IMAGE` (default
`localhost/sqlrs-test-postgres:16`, built by `scripts/build-test-image.sh`; the daemons come from
`scripts/services.sh`). A runtime that is not available skips its tests, or fails them when
`SQLRS_REQUIRE` names it (see `_require.py`). Paths stay short: Unix socket paths must fit in
~100 characters.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _require import require
from _runtimes import (
    CONTAINER_RUNTIMES,
    FACTORIES,
    RUN_LABELS,
    RuntimeUnderTest,
    Servers,
    open_runtime,
    postmaster_status,
    resolve_identity,
    server_fixtures,
)
from harness import TEST_IMAGE

from sqlrs.adapters.containers.layout import LABEL_INSTANCE, PGDATA, SCRIPTS_DIR
from sqlrs.adapters.containers.runtime import ContainerRuntime
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable
from sqlrs.ports.runtime import InstanceSpec, RuntimeIdentity

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", params=CONTAINER_RUNTIMES)
def rut(request: pytest.FixtureRequest) -> Iterator[RuntimeUnderTest]:
    with open_runtime(request.param) as opened:
        yield opened


@pytest.fixture(scope="module")
def runtime(rut: RuntimeUnderTest) -> ContainerRuntime:
    assert isinstance(rut.runtime, ContainerRuntime)
    return rut.runtime


root, identity, template, servers = server_fixtures("sqlrs-ct-")


def cli_inspect(runtime: ContainerRuntime, ref: str) -> dict:
    out = subprocess.run([runtime.name, "inspect", ref], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


# --- daemon and images --------------------------------------------------------------------------


def test_probe_of_a_dead_endpoint_says_why(runtime: ContainerRuntime, root: Path) -> None:
    assert runtime.name in runtime.probe().reason
    dead = type(runtime)(base_url=f"unix://{root}/no-daemon.sock")  # type: ignore[call-arg]
    began = time.monotonic()
    probe = dead.probe()
    assert time.monotonic() - began < 5
    assert not probe.available
    assert f"{runtime.name}: daemon at unix://{root}/no-daemon.sock does not answer" in probe.reason


def test_resolve_gives_the_image_digest_and_caches_facts(
    runtime: ContainerRuntime, identity: RuntimeIdentity
) -> None:
    assert (
        identity.identity.startswith("image:sha256:") and len(identity.identity) == len("image:sha256:") + 64
    )
    assert identity.image == TEST_IMAGE and TEST_IMAGE in identity.description
    began = time.monotonic()
    assert runtime.resolve(TEST_IMAGE) == identity  # facts are cached per image id
    assert time.monotonic() - began < 1.0


def test_identity_is_the_same_in_docker_and_podman() -> None:
    identities = {}
    for name in CONTAINER_RUNTIMES:
        rut = FACTORIES[name]()
        try:
            probe = rut.runtime.probe()
            require(name, probe.available, probe.reason)
            identities[name] = resolve_identity(rut).identity
        finally:
            rut.close()
    assert identities["docker"] == identities["podman"]


def test_missing_image_is_a_clear_error(runtime: ContainerRuntime) -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        runtime.resolve("localhost/sqlrs-no-such-image:0")
    assert "localhost/sqlrs-no-such-image:0" in caught.value.message
    assert caught.value.hint and "pull" in caught.value.hint and "--image" in caught.value.hint


# --- containers ---------------------------------------------------------------------------------


def test_server_container_is_labelled_published_on_loopback_and_mounted(
    runtime: ContainerRuntime, servers: Servers
) -> None:
    server = servers.make()
    server.start()
    spec = server.spec
    info = cli_inspect(runtime, server.ref)
    bindings = info["NetworkSettings"]["Ports"][f"{spec.port}/tcp"]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    assert all(b["HostPort"] == str(spec.port) for b in bindings)
    # labels that let leftovers be found; mounts that keep scripts read-only
    assert info["Config"]["Labels"][LABEL_INSTANCE] == spec.instance_id
    assert info["Config"]["Labels"]["sqlrs.test"] == RUN_LABELS["sqlrs.test"]
    assert info["Name"].lstrip("/") == f"sqlrs-{spec.instance_id}"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[SCRIPTS_DIR]["RW"] is False
    assert mounts[PGDATA]["RW"] is True
    runtime.stop(spec, "0" * 64)  # a container that never existed is fine
    runtime.discard(spec, "0" * 64)


def test_restart_after_the_container_was_removed_by_hand(runtime: ContainerRuntime, servers: Servers) -> None:
    server = servers.make()
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


def test_leftovers_finds_containers_by_label_and_removes_them(
    runtime: ContainerRuntime, servers: Servers
) -> None:
    server = servers.make()
    server.start()
    mine = {LABEL_INSTANCE: server.spec.instance_id}
    assert runtime.leftovers(mine) == [server.ref]
    assert server.ref in runtime.leftovers(RUN_LABELS)
    runtime.remove_container(server.ref)  # running: removed by force
    assert runtime.leftovers(mine) == []
    assert not runtime.is_running(server.spec, server.ref)
    runtime.remove_container(server.ref)  # a missing one is fine


# --- tools --------------------------------------------------------------------------------------


def test_scripts_are_read_only_to_the_tools(runtime: ContainerRuntime, servers: Servers) -> None:
    server = servers.make()
    server.start()
    _, _, err, _ = server.run("psql", "-X", "-c", f"\\o {SCRIPTS_DIR}/out.txt")
    assert "out.txt" in err  # psql says why it cannot write there
    assert not (server.spec.scripts_dir / "out.txt").exists()


def test_cancel_also_cancels_the_query(runtime: ContainerRuntime, servers: Servers) -> None:
    """psql gets SIGINT first inside the container, so the server cancels its query too."""
    server = servers.make()
    server.start()
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    began = time.monotonic()
    code, _, _, _ = server.run("psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "select pg_sleep(60)", cancel=cancel)
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


def test_exec_tool_on_a_stopped_instance_is_a_runtime_failure(
    runtime: ContainerRuntime, servers: Servers
) -> None:
    server = servers.make()
    server.start()
    server.stop()
    with pytest.raises(RuntimeFailure, match="not running"):
        server.run("psql", "-X", "-c", "select 1")


def test_tool_path_maps_only_the_scripts_dir(runtime: ContainerRuntime, identity: RuntimeIdentity) -> None:
    spec = InstanceSpec(
        instance_id="x", data_dir=Path("/tmp/d"), run_dir=Path("/tmp/r"), port=5432, identity=identity
    )
    assert runtime.tool_path(spec, Path("/tmp/r/scripts/a/b.sql")) == f"{SCRIPTS_DIR}/a/b.sql"
    assert runtime.tool_path(spec, Path("/tmp/r/scripts")) == SCRIPTS_DIR
    with pytest.raises(RuntimeFailure):
        runtime.tool_path(spec, Path("/etc/passwd"))
