"""Lean when nobody is testing (decisions/0014): what the engine keeps once a run of claims is over,
what a superseded state keeps (nothing), the footprint `status` reports, and the default cap on
the state cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import Sqlrs, processes_mentioning, short_tmp, wait_for

import sqlrs
from sqlrs.services.states.cache import DEFAULT_CAP_SHARE, DEFAULT_MAX_BYTES

SQLRS_RUNTIMES = ("native", "docker")  # what is kept ahead: the same bookkeeping on every runtime

MiB = 1024 * 1024


def client_for(sq: Sqlrs, workspace: Path) -> sqlrs.Client:
    return sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=workspace)


def kept_for(status: dict[str, Any], state_id: str) -> dict[str, int]:
    """What the engine keeps started ahead for a state: its shared server's copies, its warm instances."""
    hosts = [h for h in status["shared_servers"] if h["state_id"] == state_id]
    warm = [w for w in status["warm"]["states"] if w["state_id"] == state_id]
    return {"hosts": len(hosts), "copies": sum(h["ready"] for h in hosts),
            "warm": sum(w["ready"] + w["starting"] for w in warm)}


def test_the_spares_of_a_superseded_state_stop(sqlrs_runtime: Sqlrs) -> None:
    workspace = short_tmp("ws")
    schema = workspace / "schema.sql"
    schema.write_text("CREATE TABLE item (id int);\n")
    client = client_for(sqlrs_runtime, workspace)
    old = client.build("schema.sql")
    assert client.begin_session(old, "suite-1")["expected"] == 0
    for _ in range(4):
        assert client.remove(client.create_instance(old, kind="database"))
    assert client.remove(client.create_instance(old, kind="server"))  # a warm one of the state follows
    wait_for(lambda: kept_for(client.status(), old.id)["warm"] >= 1, what="a warm instance of the old state")
    wait_for(lambda: kept_for(client.status(), old.id)["copies"] >= 4, what="copies ahead of the old state")
    [old_host] = [h["id"] for h in client.status()["shared_servers"]]
    client.end_session("suite-1")

    schema.write_text("CREATE TABLE item (id int, edited int);\n")  # the migration is edited
    new = client.build("schema.sql")
    assert new.id != old.id
    assert client.begin_session(new, "suite-2")["state_id"] == new.id
    assert [s["session"] for s in client.call("GET", "/v1/sessions")] == ["suite-2"]
    instance = client.create_instance(new, kind="database")
    wait_for(lambda: kept_for(client.status(), old.id) == {"hosts": 0, "copies": 0, "warm": 0}, timeout=60,
             what="the superseded state's spares to stop")
    wait_for(lambda: not processes_mentioning(old_host), timeout=60, what="the old shared server's processes")
    assert kept_for(client.status(), new.id)["hosts"] == 1

    assert client.remove(instance)
    assert client.end_session("suite-2") == {"session": "suite-2", "ended": True, "state_ids": [new.id]}
    assert client.call("GET", "/v1/sessions") == []
    # within seconds of the session's end: the idle level, one shared server with databases.spares copies
    wait_for(lambda: client.status()["demand"]["idle"] == [new.id], timeout=60, what="the new state to idle")
    wait_for(lambda: kept_for(client.status(), new.id) == {"hosts": 1, "copies": 2, "warm": 0}, timeout=60,
             what="the idle level")
    footprint = client.status()["footprint"]
    assert footprint["servers"] == {"warm": 0, "shared": 1, "user": 0, "total": 1}
    assert footprint["copies_ready"] == 2 and footprint["database_instances"] == 0
    assert footprint["disk"]["states_bytes"] > 0 and footprint["disk"]["shared_bytes"] > 0
    if sqlrs_runtime.runtime == "native":  # the engine reads its own servers' /proc (containers: theirs too)
        assert footprint["memory"]["processes"] >= 2 and footprint["memory"]["rss_bytes"] > MiB
    assert sqlrs_runtime.run("rm", old.id, "--recurse").returncode == 0
    assert sqlrs_runtime.run("rm", new.id, "--recurse").returncode == 0
    shutil.rmtree(workspace, ignore_errors=True)


def test_status_shows_the_footprint_and_the_default_cap_on_a_fresh_state_dir(sqlrs_native: Sqlrs) -> None:
    status = sqlrs_native.json("status")
    filesystem = os.statvfs(sqlrs_native.state_dir / "store")
    expected = min(DEFAULT_MAX_BYTES, filesystem.f_blocks * filesystem.f_frsize // DEFAULT_CAP_SHARE)
    assert status["cache"]["max_bytes"] == expected and status["cache"]["max_bytes_source"] == "default"
    assert status["footprint"]["servers"] == {"warm": 0, "shared": 0, "user": 0, "total": 0}
    assert status["footprint"]["disk"]["total_bytes"] == 0
    table = sqlrs_native.run("status")
    assert table.returncode == 0, table.stderr
    assert "(the default cap)" in table.stdout and "servers:   0 up" in table.stdout
    assert sqlrs_native.run("config", "set", "cache.capacity.max_bytes", "0").returncode == 0
    assert "(no cap)" in sqlrs_native.run("status").stdout
    assert sqlrs_native.run("config", "set", "cache.capacity.max_bytes", "auto").returncode == 0
    assert sqlrs_native.json("status")["cache"]["max_bytes"] == expected
    assert sqlrs_native.run("config", "set", "cache.capacity.max_bytes", "2G").returncode == 0
    assert sqlrs_native.json("status")["cache"]["max_bytes_source"] == "config"
    bad = sqlrs_native.run("config", "set", "cache.capacity.max_bytes", "lots")
    assert bad.returncode == 2 and "or auto" in bad.stderr


def chain_sql(k: int) -> str:
    """A step of about 15 MB (7 MB of table, plus its WAL), different for every k."""
    return (f"CREATE TABLE t{k} AS SELECT g, repeat(md5((g * {k + 1})::text), 8) AS pad "
            f"FROM generate_series(1, 25000) AS g")


def test_eviction_keeps_the_copy_store_under_a_small_cap(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    assert sq.json("status")["snapshot"]["backend"] == "copy"  # the store a newcomer gets (on ext4)
    sq.prepare("-c", chain_sql(0))
    for instance in sq.instances():
        assert sq.run("rm", instance["id"]).returncode == 0
    states = sq.states()
    base = next(s for s in states if s["parent_id"] is None)
    step = next(s for s in states if s["parent_id"] is not None)
    cap = base["size_bytes"] + int(2.5 * step["size_bytes"])  # the base and two steps fit
    assert sq.run("config", "set", "cache.capacity.max_bytes", str(cap)).returncode == 0
    built = [step["id"]]
    for k in range(1, 5):
        result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", chain_sql(k))
        assert result.returncode == 0, result.stderr
        [instance] = sq.instances()
        built.append(instance["state_id"])
        assert sq.run("rm", instance["id"]).returncode == 0
        cache = sq.json("status")["cache"]
        assert cache["size_bytes"] <= cap, (k, cache, cap)
        assert built[-1] in {s["id"] for s in sq.states()}  # the state just built stays
    assert sq.json("status")["cache"]["evicted_states"] >= 2
    present = {s["id"] for s in sq.states()}
    assert base["id"] in present and len(present) <= 3
    assert {p.name for p in (sq.state_dir / "store" / "states").iterdir()} <= present  # the data went too


SESSION_TESTS = '''
def test_the_session_is_open_while_tests_run(sqlrs_client, sqlrs_dsn):
    import os
    sessions = sqlrs_client.call("GET", "/v1/sessions")
    assert [s["session"].endswith(os.environ.get("PYTEST_XDIST_WORKER", "main")) for s in sessions] == [True]
'''


def test_the_pytest_plugin_begins_and_ends_its_session(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int);\n")
    (workspace / "test_session.py").write_text(SESSION_TESTS)
    (workspace / "pytest.ini").write_text("[pytest]\nsqlrs_files = schema.sql\nsqlrs_runtime = native\n")
    # the inner run is no xdist worker, even when this test runs in one
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
    env["SQLRS_STATE_DIR"] = str(sqlrs_native.state_dir)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=workspace,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stdout
    status = sqlrs_native.json("status")
    assert status["demand"]["sessions"] == 0
    [state] = [s["id"] for s in sqlrs_native.states() if s["parent_id"] is not None]
    assert state in status["demand"]["busy"] + status["demand"]["idle"]
