"""The same end-to-end scenarios on every runtime: native, docker and podman (issue 3).

Each test runs once per runtime through the `sqlrs_runtime` fixture (module-scoped: the tests of
one runtime share a state directory, so its cache and engine; see conftest.py). Tests that are
about containers only skip on native. `SQLRS_REQUIRE=docker,podman,native` turns an unavailable
runtime into a failure instead of a skip.

Nothing is mocked: real engines, real PostgreSQL servers (host processes or containers of the
local test image), real psql. Leftovers are checked with the runtimes' own CLIs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pexpect
import pytest
from _containers import containers, remove_containers
from _require import require
from conftest import runtime_available
from harness import (
    DATASETS,
    TEST_IMAGE,
    Sqlrs,
    build_psql,
    check_rebuild_of_last_step,
    golden,
    processes_mentioning,
    psql,
    short_tmp,
    write,
)

import sqlrs
from sqlrs.adapters.pgfiles import pid_alive

SAKILA = DATASETS / "sakila"
CHINOOK = DATASETS / "chinook"
SAKILA_FILES = ("-f", "1-postgres-sakila-schema.sql", "-f", "2-postgres-sakila-insert-data-using-copy.sql")

pytestmark = pytest.mark.timeout(600)


def instance_ids(sq: Sqlrs) -> set[str]:
    return {i["id"] for i in sq.instances()}


def instance_by_dsn(sq: Sqlrs, dsn: str) -> dict:
    return next(i for i in sq.instances() if i["dsn"] == dsn)


def data_dir(sq: Sqlrs, instance_id: str) -> Path:
    return sq.state_dir / "store" / "instances" / instance_id


def servers_of(sq: Sqlrs, instance_id: str) -> list[str]:
    """Containers of one instance, or (native) host processes running on its data dir."""
    if sq.runtime == "native":
        return [f"pid {pid}" for pid, _ in processes_mentioning(str(data_dir(sq, instance_id)))]
    return containers(sq.state_dir, f"sqlrs.instance={instance_id}", tools=(sq.runtime,))


def rm(sq: Sqlrs, ref: str) -> None:
    result = sq.run("rm", ref)
    assert result.returncode == 0, result.stderr


def assert_gone(sq: Sqlrs, instance_id: str) -> None:
    """No metadata, no server (container or process), no data directory."""
    assert instance_id not in instance_ids(sq)
    assert not data_dir(sq, instance_id).exists()
    assert not servers_of(sq, instance_id)
    assert not processes_mentioning(str(data_dir(sq, instance_id)))


def composite(sq: Sqlrs, prepare_args: list[str], run: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return sq.run("prepare:psql", *sq.runtime_flags(), "--", *prepare_args, *run, cwd=cwd)


# -- datasets, cache hits, removal ------------------------------------------------------------------
def test_datasets_golden_cache_hit_and_rm(sqlrs_runtime: Sqlrs) -> None:
    sq = sqlrs_runtime
    dsn = sq.prepare(*SAKILA_FILES, cwd=SAKILA)
    assert golden(dsn, "sakila") == ""
    built = {s["id"] for s in sq.states()}
    assert len(built) == 3  # base + two steps
    first = instance_by_dsn(sq, dsn)
    assert first["runtime"] == sq.runtime and first["status"] == "running"

    # the cache hit: every state cached, nothing built, a fresh instance with a working DSN
    assert [p["cached"] for p in sq.plan(*SAKILA_FILES, cwd=SAKILA)] == [True, True, True]
    hit = sq.prepare(*SAKILA_FILES, cwd=SAKILA)
    assert hit != dsn
    assert {s["id"] for s in sq.states()} == built
    assert golden(hit, "sakila") == ""
    psql(dsn, "DELETE FROM payment")  # instances are isolated copies
    assert psql(hit, "SELECT count(*) FROM payment") == "16049"

    chinook = sq.prepare("-f", "Chinook_PostgreSql.sql", cwd=CHINOOK)
    assert golden(chinook, "chinook", dbname="chinook") == ""

    for url in (dsn, hit, chinook):
        instance = instance_by_dsn(sq, url)
        assert servers_of(sq, instance["id"]), f"no server for {instance['id']}"
        rm(sq, instance["id"])
        assert_gone(sq, instance["id"])
        rm(sq, instance["id"])  # idempotent
    # the only servers left are the engine's warm instances, ready for the next hit (one may still
    # be starting: its container exists before its metadata row)
    client = sqlrs.Client(sq.state_dir, spawn=False)
    deadline = time.monotonic() + 120
    while True:
        warm = [i["id"] for i in client.call("GET", "/v1/instances?warm=true") if i["pooled"]]
        warm_servers = {c for instance_id in warm for c in containers(sq.state_dir, f"sqlrs.instance={instance_id}")}
        stray = set(containers(sq.state_dir, "sqlrs.role=server")) - warm_servers
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not stray, stray


def test_editing_last_of_three_steps_rebuilds_only_it(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    for url in check_rebuild_of_last_step(sq, workspace):
        rm(sq, instance_by_dsn(sq, url)["id"])


# -- run:psql / run:pgbench -----------------------------------------------------------------------------
def test_run_tools_stream_output_and_keep_exit_codes(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    write(workspace / "s.sql", "CREATE TABLE t AS SELECT generate_series(1, 10) AS x;\n")
    sq.prepare("-f", "s.sql", name="tools", cwd=workspace)
    ok = sq.run("run:psql", "--instance", "tools", "--", "-At", "-c", "SELECT sum(x) FROM t")
    assert ok.returncode == 0 and ok.stdout.strip() == "55", ok.stderr
    # one user, the DSN's (issue 22.4): what run:psql shows and creates is what a client of the DSN sees
    dsn_user = urlsplit(next(i for i in sq.instances() if i["name"] == "tools")["dsn"]).username
    who = sq.run("run:psql", "--instance", "tools", "--", "-At", "-c", "SELECT current_user", "-c", "\\conninfo")
    assert who.returncode == 0 and who.stdout.splitlines()[0] == dsn_user == "sqlrs", who.stdout + who.stderr
    assert f'as user "{dsn_user}"' in who.stdout
    failing = sq.run("run:psql", "--instance", "tools", "--", "-c", "SELECT 1/0")
    assert failing.returncode == 1 and "division by zero" in failing.stderr
    write(workspace / "q.sql", "\\set ON_ERROR_STOP 1\nSELECT count(*) FROM t;\nSELECT * FROM nope;\n")
    script = sq.run("run:psql", "--instance", "tools", "--", "-At", "-f", "q.sql", cwd=workspace)
    assert script.returncode == 3 and script.stdout.strip() == "10" and "q.sql:3" in script.stderr
    piped = sq.run("run:psql", "--instance", "tools", "--", "-At", input="SELECT 40 + 2;\n")
    assert piped.returncode == 0 and piped.stdout.strip() == "42"

    # output streams as it comes: the first row arrives long before the command ends
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlrs", "run:psql", "--instance", "tools", "--", "-At",
         "-c", "SELECT 'first'", "-c", "SELECT pg_sleep(2)", "-c", "SELECT 'last'"],
        env=sq.env, cwd=sq.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    first_line = proc.stdout.readline()
    first_at = time.monotonic() - started
    rest, err = proc.communicate(timeout=120)
    ended_at = time.monotonic() - started
    assert proc.returncode == 0, err
    assert first_line == "first\n" and rest.split() == ["last"]
    assert ended_at - first_at > 1.5, (first_at, ended_at)

    bench_init = sq.run("run:pgbench", "--instance", "tools", "--", "-i", "-s", "1")
    assert bench_init.returncode == 0, bench_init.stderr
    assert "done in" in bench_init.stderr  # pgbench's progress, on stderr
    bench = sq.run("run:pgbench", "--instance", "tools", "--", "-c", "2", "-t", "50", "-n")
    assert bench.returncode == 0, bench.stderr
    assert "number of transactions actually processed: 100/100" in bench.stdout
    bench_bad = sq.run("run:pgbench", "--instance", "tools", "--", "-n", "-t", "1", "-c", "1", "-f", "nope.sql",
                       cwd=workspace)
    assert bench_bad.returncode != 0 and "Traceback" not in bench_bad.stderr
    count = sq.run("run:psql", "--instance", "tools", "--", "-At", "-c", "SELECT count(*) FROM pgbench_accounts")
    assert count.returncode == 0 and count.stdout.strip() == "100000"
    instance = next(i for i in sq.instances() if i["name"] == "tools")
    rm(sq, "tools")
    assert_gone(sq, instance["id"])


# -- composite prepare ... run ... ---------------------------------------------------------------------
def test_composite_leaves_no_instance_and_no_container(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    # the composite's own instance must go; warm instances (the engine's, ready for the next hit)
    # would be left by design, so this test runs without them
    assert sq.run("config", "set", "warm.enabled", "false").returncode == 0
    try:
        client = sqlrs.Client(sq.state_dir, spawn=False)
        deadline = time.monotonic() + 120
        while any(i["pooled"] for i in client.call("GET", "/v1/instances?warm=true")):
            assert time.monotonic() < deadline, "warm instances were not removed after warm.enabled=false"
            time.sleep(0.2)
        _composite_leaves_nothing(sq, workspace)
    finally:
        sq.run("config", "unset", "warm.enabled")


def _composite_leaves_nothing(sq: Sqlrs, workspace: Path) -> None:
    write(workspace / "s.sql", "CREATE TABLE t AS SELECT 7 AS x;\n")
    before_instances = instance_ids(sq)
    before_containers = set(containers(sq.state_dir))
    ok = composite(sq, ["-f", "s.sql"], ["run:psql", "--", "-At", "-c", "SELECT x * 6, current_user FROM t"],
                   workspace)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "42|sqlrs"
    assert instance_ids(sq) == before_instances
    assert set(containers(sq.state_dir)) == before_containers
    failing = composite(sq, ["-f", "s.sql"], ["run:psql", "--", "-c", "SELECT nope"], workspace)
    assert failing.returncode == 1 and "nope" in failing.stderr and "Traceback" not in failing.stderr
    assert instance_ids(sq) == before_instances
    assert set(containers(sq.state_dir)) == before_containers
    bench = composite(sq, ["-f", "s.sql"], ["run:pgbench", "--", "-i", "-s", "1", "-q"], workspace)
    assert bench.returncode == 0, bench.stderr
    assert instance_ids(sq) == before_instances
    assert set(containers(sq.state_dir)) == before_containers
    assert not processes_mentioning(str(sq.state_dir / "store" / "instances"))
    assert not list((sq.state_dir / "store" / "instances").iterdir())


# -- a vanished server is recreated from its data directory -------------------------------------------
def vanisher(sq: Sqlrs, instance_id: str, how: str) -> list[str]:
    """The command that makes the instance's server disappear behind sqlrs' back.

    `rm`: the container is removed by hand (native: the postmaster is SIGKILLed); `kill`: what a
    daemon restart leaves, an exited container (native: SIGQUIT, an immediate shutdown).
    """
    if sq.runtime == "native":
        pid = (data_dir(sq, instance_id) / "postmaster.pid").read_text().split()[0]
        return ["kill", "-KILL" if how == "rm" else "-QUIT", pid]
    ids = [ref.split(":", 1)[1] for ref in servers_of(sq, instance_id)]
    assert len(ids) == 1, ids
    return [sq.runtime, "rm", "-f", ids[0]] if how == "rm" else [sq.runtime, "kill", ids[0]]


@pytest.mark.parametrize("how", ["rm", "kill"])
def test_vanished_server_is_recreated_from_its_data_dir(sqlrs_runtime: Sqlrs, workspace: Path, how: str) -> None:
    sq = sqlrs_runtime
    write(workspace / "s.sql", "CREATE TABLE kept (x int);\n")
    name = f"vanish-{how}"
    dsn = sq.prepare("-f", "s.sql", name=name, cwd=workspace)
    instance = instance_by_dsn(sq, dsn)
    command = vanisher(sq, instance["id"], how)
    wrote = sq.run("run:psql", "--instance", name, "--", "-c", "INSERT INTO kept VALUES (41), (1)")
    assert wrote.returncode == 0, wrote.stderr
    subprocess.run(command, check=True, capture_output=True, timeout=60)  # right after the commit
    if sq.runtime == "native":
        pid = int(command[-1])
        deadline = time.monotonic() + 20
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid)

    listed = {i["id"]: i for i in sq.instances()}
    assert listed[instance["id"]]["status"] == "missing"
    table = sq.run("ls")
    assert table.returncode == 0 and "missing" in table.stdout

    if how == "rm":
        again = sq.run("run:psql", "--instance", name, "--", "-At", "-c", "SELECT sum(x) FROM kept")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "42"  # the data committed before is still there
    else:  # an interactive session (a terminal: the local psql on the DSN) restarts it too
        child = pexpect.spawn(sys.executable, ["-m", "sqlrs", "run:psql", "--instance", name],
                              env={**sq.env, "PAGER": "cat", "PSQL_PAGER": "cat"}, encoding="utf-8", timeout=60)
        try:
            child.expect("=#")
            child.sendline("SELECT sum(x) * 1000 AS total FROM kept;")
            child.expect("42000")
            child.sendline("\\q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0
    listed = {i["id"]: i for i in sq.instances()}
    assert listed[instance["id"]]["status"] == "running"
    assert listed[instance["id"]]["dsn"] == dsn  # same port, same password
    assert psql(dsn, "SELECT count(*) FROM kept") == "2"
    assert len(servers_of(sq, instance["id"])) == 1
    rm(sq, name)
    assert_gone(sq, instance["id"])


# -- images ---------------------------------------------------------------------------------------------
def test_missing_image_is_a_clear_one_line_error(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    """Containers: a one-line error with a hint. Native has no images: it says it ignores one."""
    sq = sqlrs_runtime
    write(workspace / "s.sql", "SELECT 1;\n")
    image = "localhost/sqlrs-no-such-image:1"
    if sq.runtime == "native":
        result = sq.run("prepare:psql", "--runtime", "native", "--image", image, "--", "-f", "s.sql",
                        cwd=workspace)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]
        assert any(f"native runtime ignores the image {image}" in line for line in warnings), result.stderr
        assert psql(result.stdout.strip(), "SELECT 1") == "1"
        rm(sq, instance_by_dsn(sq, result.stdout.strip())["id"])
        return
    before = set(containers(sq.state_dir))
    for command in ("prepare:psql", "plan:psql"):
        result = sq.run(command, "--runtime", sq.runtime, "--image", image, "--", "-f", "s.sql", cwd=workspace)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("sqlrs: error:")]
        assert len(errors) == 1, result.stderr
        assert image in errors[0] and "cannot be pulled" in errors[0]
        assert len(errors[0]) < 400, errors[0]
        hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
        assert hints and f"{sq.runtime} load" in hints[0] and "--image" in hints[0]
    assert set(containers(sq.state_dir)) == before


# -- an engine crash leaves nothing behind once the engine is back -------------------------------------
def test_engine_crash_mid_build_leaves_no_server(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    write(workspace / "fast.sql", "CREATE TABLE survivor (x int);\n")
    survivor = sq.prepare("-f", "fast.sql", name="survivor", cwd=workspace)
    survivor_id = instance_by_dsn(sq, survivor)["id"]
    write(workspace / "slow.sql", f"SELECT pg_sleep(60); -- {time.time()}\n")
    submitted = sq.run("prepare:psql", *sq.runtime_flags(), "--no-watch", "--", "-f", "slow.sql", cwd=workspace)
    assert submitted.returncode == 0, submitted.stderr
    scratch = sq.state_dir / "store" / "scratch"

    def scratch_servers() -> list[str]:
        if sq.runtime == "native":  # the server, not the clone or initdb that also name the scratch dir
            return [f"pid {pid}" for pid, cmd in processes_mentioning(f"-D {scratch}") if "postgres" in cmd]
        return [c for c in containers(sq.state_dir, "sqlrs.role=server", tools=(sq.runtime,))
                if c not in servers_of(sq, survivor_id)]

    def slow_step_running() -> bool:  # psql runs the slow step: the build's server is up and in use
        if sq.runtime != "native":  # psql runs in the container; its server is up once the container is
            return True
        return bool(build_psql(sq.state_dir))  # this build's, not another test's

    deadline = time.monotonic() + 120
    while not (scratch_servers() and slow_step_running()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scratch_servers(), "the build's scratch server did not start"
    assert slow_step_running(), "the build's psql did not start the slow step"
    if sq.runtime != "native":
        time.sleep(1.0)  # psql is running the slow step now
    pid = sq.engine_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
    assert scratch_servers()  # the crash left the scratch server running

    listed = sq.instances()  # spawns a new engine, which cleans up on start
    assert [i["id"] for i in listed] == [survivor_id] and listed[0]["status"] == "running"
    assert scratch_servers() == []
    assert list(scratch.iterdir()) == []
    assert psql(survivor, "SELECT count(*) FROM survivor") == "0"
    rm(sq, "survivor")
    assert_gone(sq, survivor_id)


# -- choosing the runtime: flag, env, config; status says why ------------------------------------------
def test_runtime_choice_flag_env_config_and_status() -> None:
    for name in ("native", "docker", "podman"):
        require(name, *runtime_available(name))
    state_dir = short_tmp()
    sq = Sqlrs(state_dir, runtime="native")
    sq.env["SQLRS_IMAGE"] = TEST_IMAGE  # config dbms.image

    def chosen(*flags: str, env: dict[str, str] | None = None) -> str:
        result = sq.run("plan:psql", *flags, "-o", "json", "--", "-c", "SELECT 1", env=env)
        assert result.returncode == 0, result.stderr
        return str(sq.json("ls", "--jobs")[-1]["result"]["runtime"])

    try:
        # env SQLRS_CONTAINER_RUNTIME (read by the engine, which inherits the CLI's environment)
        assert sq.run("engine", "start", env={"SQLRS_CONTAINER_RUNTIME": "podman"}).returncode == 0
        status = sq.json("status")
        assert status["runtime"]["name"] == "podman"
        assert "SQLRS_CONTAINER_RUNTIME" in status["runtime"]["reason"]
        assert {p["name"]: p["available"] for p in status["runtimes"]} == {"docker": True, "podman": True,
                                                                           "native": True}
        assert all(p["reason"] for p in status["runtimes"])
        assert chosen() == "podman"
        assert chosen("--runtime", "docker") == "docker"  # the per-command flag wins
        assert chosen("--runtime", "native") == "native"
        text = sq.run("status")
        assert text.returncode == 0
        assert "runtime:   podman" in text.stdout and "SQLRS_CONTAINER_RUNTIME" in text.stdout
        for probe in ("docker", "podman", "native"):
            assert f"ok {probe}: " in text.stdout
        assert sq.run("engine", "stop").returncode == 0

        # config key container.runtime (no env)
        assert sq.run("config", "set", "container.runtime", "native").returncode == 0
        assert sq.run("config", "get", "container.runtime").stdout.strip() == "native"
        status = sq.json("status")
        assert status["runtime"]["name"] == "native" and "config" in status["runtime"]["reason"]
        assert chosen() == "native"
        assert chosen("--runtime", "podman") == "podman"
        assert sq.run("config", "set", "container.runtime", "docker").returncode == 0
        assert chosen() == "docker"
        bad = sq.run("config", "set", "container.runtime", "lxc")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr

        # auto: the probe order, and the reason names it
        assert sq.run("config", "unset", "container.runtime").returncode == 0
        status = sq.json("status")
        assert status["runtime"]["name"] == "docker" and "auto" in status["runtime"]["reason"]
        assert chosen() == "docker"
    finally:
        leftovers = sq.close()
        stray = containers(state_dir)
        remove_containers(stray)
        shutil.rmtree(state_dir, ignore_errors=True)
    assert not leftovers, leftovers
    assert not stray, stray


def test_unavailable_runtime_by_name_is_a_clear_error(workspace: Path) -> None:
    require("native", *runtime_available("native"))
    state_dir = short_tmp()
    sq = Sqlrs(state_dir, runtime="native")
    env = {"SQLRS_CONTAINER_RUNTIME": "podman", "CONTAINER_HOST": "unix:///tmp/no-such-podman.sock",
           "DOCKER_HOST": "unix:///tmp/no-such-docker.sock"}
    try:
        result = sq.run("plan:psql", "--", "-c", "SELECT 1", env=env, cwd=workspace)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "podman" in result.stderr and "SQLRS_CONTAINER_RUNTIME" in result.stderr
        status = json.loads(sq.run("status", "-o", "json", env=env).stdout)
        assert status["runtime"]["name"] is None
        probes = {p["name"]: p for p in status["runtimes"]}
        assert not probes["docker"]["available"] and "does not answer" in probes["docker"]["reason"]
        assert not probes["podman"]["available"] and "does not answer" in probes["podman"]["reason"]
        assert probes["native"]["available"]
        assert sq.run("engine", "stop").returncode == 0

        # auto with docker down: podman (which has the default image here), and the reason says why
        # docker was skipped
        status = json.loads(sq.run("status", "-o", "json", env={"DOCKER_HOST": env["DOCKER_HOST"],
                                                                "SQLRS_IMAGE": TEST_IMAGE}).stdout)
        assert status["runtime"]["name"] == "podman"
        reason = status["runtime"]["reason"]
        assert "auto" in reason and "skipped docker" in reason and "does not answer" in reason
    finally:
        leftovers = sq.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    assert not leftovers, leftovers


# -- engine start stays light ---------------------------------------------------------------------------
def test_engine_start_asks_container_runtimes_only_when_needed() -> None:
    """No container SDK is imported (nor daemon asked) at engine start unless containers may exist."""
    state_dir = short_tmp()
    script = (
        "import sys; from pathlib import Path; "
        "from sqlrs.entrypoints.engine.bootstrap import bootstrap; "
        f"bootstrap(Path({str(state_dir)!r})); "
        "print(sorted(m for m in ('docker', 'podman') if m in sys.modules))"
    )

    def imported() -> str:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    try:
        assert imported() == "[]"  # a fresh (or native-only) state dir
        (state_dir / "store" / "scratch" / "bcrashed").mkdir()  # a crashed build: any runtime may have run it
        assert imported() == "['docker', 'podman']"
        assert not (state_dir / "store" / "scratch" / "bcrashed").exists()
        assert imported() == "[]"
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
