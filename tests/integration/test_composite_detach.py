"""Detaching from a composite `prepare:psql ... run:psql ...` leaves nothing running: the run is
skipped, and the ephemeral instance the job makes expires on its idle TTL (issue 14.4)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pexpect
import pytest
from harness import Sqlrs, api, wait_for, write


def slow_step_running(sq: Sqlrs) -> bool:
    jobs = api(sq, "/v1/prepare-jobs")
    return any(t["index"] == 2 and t["status"] == "running"
               for job in jobs for t in api(sq, f"/v1/prepare-jobs/{job['id']}")["tasks"])


def detach_from_composite(sq: Sqlrs, workspace: Path, *prepare_flags: str) -> str:
    """Start a composite whose second step is slow, Ctrl+C, detach; the job id."""
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    write(workspace / "slow.sql", "SELECT pg_sleep(8);\n")
    args = ["-m", "sqlrs", "prepare:psql", "--runtime", "native", *prepare_flags, "--", "-f", "a.sql",
            "-f", "slow.sql", "run:psql", "--", "-c", "select 'the run ran'"]
    child = pexpect.spawn(sys.executable, args, cwd=str(workspace), env=sq.env, encoding="utf-8", timeout=120,
                          dimensions=(40, 160))
    child.expect("building")
    wait_for(lambda: slow_step_running(sq), what="slow.sql building")
    child.sendintr()
    child.expect(r"\[s\]top, \[d\]etach or \[c\]ontinue")
    child.sendline("d")
    child.expect(r"detached: job (\w+) keeps running")
    job_id: str = child.match.group(1)
    child.expect(pexpect.EOF)
    output = child.before or ""
    child.close()
    assert child.exitstatus == 0
    assert "the run ran" not in output
    return job_id


def finished_job(sq: Sqlrs, job_id: str) -> dict[str, Any]:
    wait_for(lambda: api(sq, f"/v1/prepare-jobs/{job_id}")["status"] in ("succeeded", "failed", "cancelled"),
             timeout=180, what="the detached job to end")
    job: dict[str, Any] = api(sq, f"/v1/prepare-jobs/{job_id}")
    assert job["status"] == "succeeded", job
    return job


def test_detached_composite_instance_gets_a_short_idle_ttl(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    job_id = detach_from_composite(sq, workspace)
    job = finished_job(sq, job_id)
    (instance,) = sq.instances()
    assert instance["id"] == job["result"]["instance_id"] and instance["ephemeral"] is True
    assert instance["ttl_seconds"] == 60  # EPHEMERAL_TTL_SECONDS: not kept forever
    assert instance["expires_in_seconds"] is not None and instance["expires_in_seconds"] <= 60


def test_detached_composite_instance_is_removed(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    job_id = detach_from_composite(sq, workspace, "--ttl", "2s")
    finished_job(sq, job_id)
    wait_for(lambda: sq.instances() == [], timeout=120, what="the ephemeral instance to expire")
    assert api(sq, "/v1/status")["instances"] == 0


@pytest.mark.parametrize(("flags", "says"), [
    (("--no-watch",), "--no-watch cannot be used with a composite"),
    (("--ttl", "0"), "--ttl 0 cannot be used with a composite"),
])
def test_composite_refuses_flags_it_cannot_honour(workspace: Path, flags: tuple[str, ...], says: str) -> None:
    write(workspace / "a.sql", "SELECT 1;\n")
    sq = Sqlrs(workspace / "state")
    result = sq.run("prepare:psql", *flags, "--", "-f", "a.sql", "run:psql", "--", "-c", "select 1", cwd=workspace)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"sqlrs: error: {says}") and lines[1].startswith("hint: ")
    assert result.stdout == ""
    assert not (workspace / "state" / "engine.json").exists()  # refused before any engine started
