"""Instance lifetime end to end: idle TTLs follow real client connections (pg_stat_activity)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
from harness import Sqlrs, wait_until

import sqlrs as sqlrs_lib


def by_id(sqlrs: Sqlrs) -> dict[str, dict[str, Any]]:
    return {instance["id"]: instance for instance in sqlrs.instances()}


def prepare_id(sqlrs: Sqlrs, workspace: Path, *flags: str) -> str:
    result = sqlrs.run("prepare:psql", *sqlrs.runtime_flags(), *flags, "--", "-f", "a.sql", cwd=workspace)
    assert result.returncode == 0, result.stderr
    dsn = result.stdout.strip()
    return next(i["id"] for i in sqlrs.instances() if i["dsn"] == dsn)


def set_ttl(sqlrs: Sqlrs, instance_id: str, ttl: int) -> None:
    sqlrs_lib.Client(sqlrs.state_dir, spawn=False).set_ttl(instance_id, ttl)


# No test here depends on how fast the machine is: instances are created with a TTL far longer
# than any listing takes, and shortened (PATCH) only once the test is ready to see them expire;
# the waits for expiry have a minute of slack. Exact expiry times are unit-tested on a fake clock
# (tests/unit/test_lifetime.py).
def test_an_idle_instance_expires_and_a_connected_one_stays(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    idle = prepare_id(sqlrs_native, workspace, "--ttl", "600s")
    busy = prepare_id(sqlrs_native, workspace, "--ttl", "600")
    forever = prepare_id(sqlrs_native, workspace)  # no TTL: config instance.ttl_seconds is 0
    listed = by_id(sqlrs_native)
    assert listed[idle]["ttl_seconds"] == 600 and 0 < listed[idle]["expires_in_seconds"] <= 600
    assert listed[forever]["ttl_seconds"] == 0 and listed[forever]["expires_in_seconds"] is None
    table = sqlrs_native.run("ls").stdout
    assert "EXPIRES" in table.splitlines()[0]

    with psycopg.connect(listed[busy]["dsn"]) as conn:
        conn.execute("INSERT INTO a VALUES (1)")
        conn.commit()
        # busy first: by the time the idle one is gone, busy's TTL has run out too (a check goes
        # through the instances in creation order and probes an expired one before removing it)
        set_ttl(sqlrs_native, busy, 2)
        set_ttl(sqlrs_native, idle, 2)
        assert wait_until(lambda: idle not in by_id(sqlrs_native), timeout=60), "the idle instance did not expire"
        assert wait_until(lambda: bool((by_id(sqlrs_native).get(busy) or {}).get("connections")), timeout=60)
        listed = by_id(sqlrs_native)
        assert busy in listed and forever in listed  # the connected instance stays past its TTL
        assert listed[busy]["expires_in_seconds"] == 2
        assert conn.execute("SELECT count(*) FROM a").fetchone() == (1,)
    # once the client is gone, the TTL runs out
    assert wait_until(lambda: busy not in by_id(sqlrs_native), timeout=60), "the instance outlived its TTL"
    assert forever in by_id(sqlrs_native)
    assert not (sqlrs_native.state_dir / "store" / "instances" / idle).exists()


def test_default_ttl_comes_from_the_config(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    assert sqlrs_native.run("config", "set", "instance.ttl_seconds", "600").returncode == 0
    # one key in JSON has the shape of the whole listing, as docs/cli.md says (issue 22.2)
    one = json.loads(sqlrs_native.run("config", "get", "instance.ttl_seconds", "-o", "json").stdout)
    assert one == {"instance.ttl_seconds": {"value": 600, "source": "config"}}
    every = json.loads(sqlrs_native.run("config", "get", "-o", "json").stdout)
    assert every["instance.ttl_seconds"] == one["instance.ttl_seconds"] and len(every) > 1
    assert sqlrs_native.run("config", "get", "instance.ttl_seconds").stdout == "600\n"
    defaulted = prepare_id(sqlrs_native, workspace)
    overridden = prepare_id(sqlrs_native, workspace, "--ttl", "0")
    listed = by_id(sqlrs_native)
    assert listed[defaulted]["ttl_seconds"] == 600
    assert listed[overridden]["ttl_seconds"] == 0
    bad = sqlrs_native.run("prepare:psql", *sqlrs_native.runtime_flags(), "--ttl", "soon", "--", "-f", "a.sql",
                           cwd=workspace)
    assert bad.returncode == 2 and "--ttl" in bad.stderr


def test_the_engine_stays_up_while_instances_with_a_ttl_exist(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    quick = {"SQLRS_ENGINE_IDLE_TIMEOUT": "1"}
    result = sqlrs_native.run("prepare:psql", *sqlrs_native.runtime_flags(), "--ttl", "600", "--", "-f", "a.sql",
                              cwd=workspace, env=quick)
    assert result.returncode == 0, result.stderr
    pid = sqlrs_native.engine_pid()
    assert pid is not None
    time.sleep(3.5)  # idle for longer than engine.idle_timeout, but an instance with a TTL exists
    os.kill(pid, 0)

    def engine_gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    set_ttl(sqlrs_native, sqlrs_native.instances()[0]["id"], 1)
    # the instance expires (nobody connects), then the engine idles out
    assert wait_until(engine_gone, timeout=60), "the engine did not exit after the last TTL instance expired"
    assert list((sqlrs_native.state_dir / "store" / "instances").iterdir()) == []


def test_a_restarted_engine_checks_ttls_again(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    instance = prepare_id(sqlrs_native, workspace, "--ttl", "600")
    assert sqlrs_native.run("engine", "stop").returncode == 0
    assert instance in by_id(sqlrs_native)  # a new engine re-adopts it ...
    set_ttl(sqlrs_native, instance, 2)
    assert wait_until(lambda: instance not in by_id(sqlrs_native), timeout=60)  # ... and enforces its TTL
