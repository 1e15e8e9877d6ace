"""PostgreSQL under a user's feet: a killed postmaster, a deleted data directory."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from harness import Sqlrs, processes_mentioning, psql, wait_for, write


def postmaster_pid(sq: Sqlrs, instance_id: str) -> int:
    data_dir = sq.state_dir / "store" / "instances" / instance_id
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_killed_postmaster_shows_missing_and_restarts_on_use(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    dsn = sq.prepare("-f", "a.sql", name="victim", cwd=workspace)
    psql(dsn, "INSERT INTO a SELECT generate_series(1, 100)")
    instance = sq.instances()[0]
    pid = postmaster_pid(sq, instance["id"])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: sq.instances()[0]["status"] == "missing", 30, "status missing")
    result = sq.run("run:psql", "--instance", "victim", "--", "-At", "-c", "SELECT count(*) FROM a")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "100"  # crash recovery kept committed rows
    assert sq.instances()[0]["status"] == "running"
    again = next(i for i in sq.instances() if i["name"] == "victim")
    assert psql(again["dsn"], "SELECT count(*) FROM a") == "100"


def test_deleted_data_directory_is_reported_and_removable(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    sq.prepare("-f", "a.sql", name="gone", cwd=workspace)
    instance = sq.instances()[0]
    data_dir = sq.state_dir / "store" / "instances" / instance["id"]
    os.kill(postmaster_pid(sq, instance["id"]), signal.SIGKILL)
    wait_for(lambda: not processes_mentioning(str(data_dir)), 30, "postmaster gone")
    shutil.rmtree(data_dir)
    assert sq.instances()[0]["status"] == "failed"  # nothing left to restart from
    result = sq.run("run:psql", "--instance", "gone", "--", "-c", "SELECT 1")
    assert result.returncode == 1
    assert "data directory is gone" in result.stderr and "sqlrs rm" in result.stderr
    assert "Traceback" not in result.stderr
    assert sq.instances()[0]["status"] == "failed"
    removed = sq.run("rm", "gone")
    assert removed.returncode == 0, removed.stderr
    assert sq.instances() == []
