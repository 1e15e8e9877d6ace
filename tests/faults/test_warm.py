"""Warm instances: a hit claims one started ahead; nothing they hold outlives them.

After a state is built or hit the engine keeps a started instance of it ready (`warm.*` config);
a prepare (or POST /v1/instances) of that state claims it. They are not user instances (`ls` leaves
them out, `status` shows them) and no server, container or data directory of theirs survives an
engine stop, a kill -9 of the engine, `rm` or eviction of their state, or a config change.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _containers import container_runtime_available, containers, remove_containers
from _require import require
from fixtures import native_available
from harness import Sqlrs, api, processes_mentioning, psql, short_tmp, wait_for, write
from test_backends_e2e import CowSqlrs, sqlrs_cow

from sqlrs.adapters.pgfiles import pid_alive

RUNTIMES = ("native", "docker", "podman")
__all__ = ["sqlrs_cow"]  # btrfs and reflink stores on loop volumes (sqlrs init local)


@pytest.fixture(params=RUNTIMES)
def sqlrs_any(request: pytest.FixtureRequest) -> Iterator[Sqlrs]:
    """A fresh state dir on each runtime; afterwards no process or container of it may be left."""
    name = request.param
    available, reason = native_available() if name == "native" else container_runtime_available(name)
    require(name, available, reason)
    state_dir = short_tmp()
    harness = Sqlrs(state_dir, runtime=name)
    try:
        yield harness
    finally:
        leftovers = harness.close()
        stray = containers(state_dir)
        remove_containers(stray)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leftovers, f"left behind: {leftovers}"
        assert not stray, f"containers left behind: {stray}"


def warm(sq: Sqlrs) -> dict[str, Any]:
    data: dict[str, Any] = sq.json("status")["warm"]
    return data


def warm_ids(sq: Sqlrs, state_id: str | None = None) -> list[str]:
    return [i for s in warm(sq)["states"] if state_id in (None, s["state_id"]) for i in s["instance_ids"]]


def wait_warm(sq: Sqlrs, state_id: str, count: int = 1) -> list[str]:
    wait_for(lambda: len(warm_ids(sq, state_id)) >= count, 120, f"{count} warm instance(s) of {state_id[:12]}")
    return warm_ids(sq, state_id)


def all_instances(sq: Sqlrs) -> list[dict[str, Any]]:
    """Every instance the engine knows, warm ones included."""
    data: list[dict[str, Any]] = api(sq, "/v1/instances?warm=true")
    return data


def assert_gone(sq: Sqlrs, instance: dict[str, Any]) -> None:
    """No server, container or data directory of the (warm) instance is left."""
    data_dir = sq.state_dir / "store" / "instances" / instance["id"]
    wait_for(lambda: not data_dir.exists() and not processes_mentioning(str(data_dir)), 60,
             f"warm instance {instance['id']} to go")
    if instance["runtime"] in ("docker", "podman"):
        assert not containers(sq.state_dir, f"sqlrs.instance={instance['id']}"), instance


def last_state(sq: Sqlrs, workspace: Path, *args: str) -> str:
    state_id: str = sq.plan(*args, cwd=workspace)[-1]["state_id"]
    return state_id


def test_a_hit_claims_the_warm_instance(sqlrs_any: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_any
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    first = sq.prepare("-f", "a.sql", cwd=workspace)  # built: a warm instance of it follows
    state = last_state(sq, workspace, "-f", "a.sql")
    [ready] = wait_warm(sq, state)
    listed = sq.instances()
    assert len(listed) == 1 and listed[0]["id"] != ready  # not a user instance
    assert {s["id"]: s["instances"] for s in sq.states()}[state] == 1  # the warm one is not counted
    assert next(i for i in all_instances(sq) if i["id"] == ready)["pooled"] is True

    second = sq.prepare("-f", "a.sql", name="claimed", cwd=workspace)
    claimed = next(i for i in sq.instances() if i["name"] == "claimed")
    assert claimed["id"] == ready and claimed["dsn"] == second and not claimed["pooled"]
    psql(second, "INSERT INTO a VALUES (2)")
    assert psql(first, "SELECT sum(x) FROM a") == "1"  # isolated from the other instance
    assert psql(second, "SELECT sum(x) FROM a") == "3"
    job = sq.json("ls", "--jobs")[-1]
    task = next(t for t in api(sq, f"/v1/prepare-jobs/{job['id']}")["tasks"] if t["kind"] == "instance")
    assert task["status"] == "done" and task["seconds"] is not None

    [replacement] = wait_warm(sq, state)  # started in the background
    assert replacement not in {i["id"] for i in sq.instances()}
    for instance in sq.instances():
        assert sq.run("rm", instance["id"]).returncode == 0
    warm_instance = next(i for i in all_instances(sq) if i["id"] == replacement)
    assert sq.run("engine", "stop").returncode == 0  # the engine stopping removes its warm instances
    assert_gone(sq, warm_instance)


def kill_engine(sq: Sqlrs) -> None:
    pid = sq.engine_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, "engine death")


def test_kill_9_of_the_engine_leaves_no_warm_instance(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    sq.prepare("-f", "a.sql", name="keep", cwd=workspace)
    state = last_state(sq, workspace, "-f", "a.sql")
    [ready] = wait_warm(sq, state)
    warm_instance = next(i for i in all_instances(sq) if i["id"] == ready)
    assert processes_mentioning(str(sq.state_dir / "store" / "instances" / ready))  # its server runs
    kill_engine(sq)
    # the next engine removes what the dead one kept warm, and re-adopts the user's instance
    assert [i["status"] for i in sq.instances()] == ["running"]
    assert_gone(sq, warm_instance)
    assert [i["id"] for i in all_instances(sq)] == [sq.instances()[0]["id"]]
    assert warm(sq)["instances"] == 0


def test_rm_of_the_state_removes_its_warm_instance(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    sq.prepare("-f", "a.sql", cwd=workspace)
    state = last_state(sq, workspace, "-f", "a.sql")
    assert sq.run("rm", sq.instances()[0]["id"]).returncode == 0
    [ready] = wait_warm(sq, state)
    warm_instance = next(i for i in all_instances(sq) if i["id"] == ready)
    # a warm instance does not keep its state: no --recurse needed, and it goes with the state
    removed = sq.json("rm", state)
    assert [r["kind"] for r in removed["removed"]] == ["state"], removed
    assert_gone(sq, warm_instance)
    assert all_instances(sq) == [] and warm(sq)["states"] == []


def step_sql(k: int, rows: int) -> str:
    return (f"CREATE TABLE t{k} AS SELECT g, repeat(md5((g * {k + 1})::text), 8) AS pad "
            f"FROM generate_series(1, {rows}) AS g")


def test_eviction_removes_the_warm_instance(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    sq.prepare("-c", step_sql(0, 25000))  # a state of ~15 MB beyond the base
    old = last_state(sq, workspace, "-c", step_sql(0, 25000))
    assert sq.run("rm", sq.instances()[0]["id"]).returncode == 0
    [ready] = wait_warm(sq, old)
    warm_instance = next(i for i in all_instances(sq) if i["id"] == ready)
    # a cap just above what is cached now: the next state (smaller) only fits once `old` goes
    cap = int(sq.json("status")["cache"]["size_bytes"]) + 1024 * 1024
    assert sq.run("config", "set", "cache.capacity.max_bytes", str(cap)).returncode == 0
    result = sq.run("prepare:psql", "--runtime", "native", "--", "-c", step_sql(1, 2000))
    assert result.returncode == 0, result.stderr
    assert f"evicted state {old[:12]}" in result.stderr  # its warm instance did not pin it
    assert old not in {s["id"] for s in sq.states()}
    assert_gone(sq, warm_instance)
    assert ready not in {i["id"] for i in all_instances(sq)}


def test_config_change_removes_the_surplus(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    # all three keep theirs once idle too (warm.idle_states, default 2): a slow machine takes longer
    # than the idle policy's quiet time to prepare them
    assert sq.run("config", "set", "warm.idle_states", "3").returncode == 0
    states = []
    for k in range(3):
        write(workspace / f"s{k}.sql", f"CREATE TABLE s{k} AS SELECT {k} AS x;\n")
        sq.prepare("-f", f"s{k}.sql", cwd=workspace)
        states.append(last_state(sq, workspace, "-f", f"s{k}.sql"))
    for state in states:
        wait_warm(sq, state)
    # at most two states: the least recently used one goes
    assert sq.run("config", "set", "warm.max_states", "2").returncode == 0
    wait_for(lambda: not warm_ids(sq, states[0]), 60, "the oldest state's warm instance to go")
    assert len(warm_ids(sq)) == 2 and warm_ids(sq, states[2])
    # a cap on the total
    assert sq.run("config", "set", "warm.max_instances", "1").returncode == 0
    wait_for(lambda: len(warm_ids(sq)) == 1, 60, "one warm instance in all")
    # off: none at all, and a hit starts its instance the ordinary way
    kept = [i for i in all_instances(sq) if i["pooled"]]
    assert sq.run("config", "set", "warm.enabled", "false").returncode == 0
    wait_for(lambda: not [i for i in all_instances(sq) if i["pooled"]], 60, "no warm instance")
    for instance in kept:
        assert_gone(sq, instance)
    assert "warm:      off" in sq.run("status").stdout
    before = {i["id"] for i in sq.instances()}
    sq.prepare("-f", "s2.sql", cwd=workspace)
    assert len({i["id"] for i in sq.instances()} - before) == 1
    assert [i for i in all_instances(sq) if i["pooled"]] == []
    # on again: the next hit is followed by a warm instance
    assert sq.run("config", "unset", "warm.enabled").returncode == 0
    sq.prepare("-f", "s2.sql", cwd=workspace)
    wait_warm(sq, states[2])
    assert "warm:      1 instance(s) ready" in sq.run("status").stdout


def test_copy_on_write_stores(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    """On btrfs and reflink a warm instance's replacement starts on the standby clone; a hit claims
    it, and removing the state leaves neither a server nor a subvolume / directory of it."""
    sq = sqlrs_cow
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    sq.prepare("-f", "a.sql", cwd=workspace)
    state = last_state(sq, workspace, "-f", "a.sql")
    [ready] = wait_warm(sq, state)
    dsn = sq.prepare("-f", "a.sql", cwd=workspace)
    assert ready in {i["id"] for i in sq.instances()}
    assert psql(dsn, "SELECT x FROM a") == "1"
    [replacement] = wait_warm(sq, state)
    warm_instance = next(i for i in all_instances(sq) if i["id"] == replacement)
    assert sq.run("rm", state, "--recurse").returncode == 0
    assert_gone(sq, warm_instance)
    assert sq.instances() == [] and all_instances(sq) == []
    assert list((sq.state_dir / "store" / "instances").iterdir()) == []
