"""Concurrent prepares of one missing chain build each state once; removals and builds don't tangle."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from harness import Sqlrs, api, psql, wait_for, write


@pytest.mark.parametrize("clients", [2, 8])
def test_concurrent_prepares_build_each_state_once(sqlrs_native: Sqlrs, workspace: Path, clients: int) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT generate_series(1, 1000) AS x;\n")
    write(workspace / "b.sql", "SELECT pg_sleep(0.5);\nCREATE TABLE b AS SELECT sum(x) AS s FROM a;\n")
    sq.run("engine", "start")
    args = [sys.executable, "-m", "sqlrs", "-q", "prepare:psql", "--runtime", "native", "--",
            "-f", "a.sql", "-f", "b.sql"]
    procs = [subprocess.Popen(args, cwd=workspace, env=sq.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(clients)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    dsns = [out.strip() for out, _ in outputs]
    assert len(set(dsns)) == clients
    for dsn in dsns:
        assert psql(dsn, "SELECT s FROM b") == "500500"
    builds: Counter[str] = Counter()
    for job in api(sq, "/v1/prepare-jobs"):
        for task in api(sq, f"/v1/prepare-jobs/{job['id']}")["tasks"]:
            if task["kind"] != "instance" and task["status"] == "done":
                builds[task["state_id"]] += 1
    assert len(builds) == 3 and set(builds.values()) == {1}, builds  # base, a, b: once each
    assert len(sq.states()) == 3


def test_rm_of_a_state_a_running_job_needs_is_refused(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    write(workspace / "slow.sql", "SELECT pg_sleep(3);\n")
    sq.prepare("-f", "a.sql", cwd=workspace)
    state_a = sq.plan("-f", "a.sql", cwd=workspace)[1]["state_id"]
    submitted = sq.run("prepare:psql", "--runtime", "native", "--no-watch", "--", "-f", "a.sql", "-f", "slow.sql",
                       cwd=workspace)
    job_id = submitted.stdout.split()[0]
    wait_for(lambda: any(t["index"] == 2 and t["status"] == "running"
                         for t in api(sq, f"/v1/prepare-jobs/{job_id}")["tasks"]), what="step 2 running")
    refused = sq.run("rm", state_a, "--recurse")
    assert refused.returncode == 1 and "running job" in refused.stderr
    watched = sq.run("watch", job_id)
    assert watched.returncode == 0
    removed = sq.run("rm", state_a, "--recurse")
    assert removed.returncode == 0, removed.stderr
    assert sq.instances() == []
    assert len(sq.states()) == 1  # the base stays
