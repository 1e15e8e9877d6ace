"""The container runtime's daemon stops under sqlrs: a clear status, then a way back.

These tests stop and restart the machine's dockerd and podman API service (scripts/services.sh
brings them back), so they run one at a time after every other test (marker `serial`, see
scripts/test.sh).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _containers import container_runtime_available, containers, remove_containers
from _require import require
from harness import REPO, Sqlrs, api, psql, short_tmp, wait_for

pytestmark = pytest.mark.serial


def services_up() -> None:
    subprocess.run([str(REPO / "scripts" / "services.sh")], check=True, capture_output=True, timeout=180)


def stop_daemon(name: str) -> None:
    pattern = "dockerd" if name == "docker" else "podman system service"
    subprocess.run(["pkill", "-f", pattern], check=False)
    probe = ["docker", "info"] if name == "docker" else ["curl", "-fsS", "--unix-socket", "/run/podman/podman.sock",
                                                          "http://d/_ping"]
    wait_for(lambda: subprocess.run(probe, capture_output=True, timeout=10).returncode != 0, 60, f"{name} down")
    if name == "docker":
        wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 60,
                 "dockerd exit")


@pytest.fixture(params=["docker", "podman"])
def sq(request: pytest.FixtureRequest) -> Iterator[Sqlrs]:
    name = request.param
    available, reason = container_runtime_available(name)
    require(name, available, reason)
    state_dir = short_tmp("sqd")
    harness = Sqlrs(state_dir, runtime=name)
    try:
        yield harness
    finally:
        services_up()
        leftovers = harness.close()
        stray = containers(state_dir)
        remove_containers(stray)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leftovers, leftovers
        assert not stray, stray


def test_daemon_stopped_mid_job_fails_clearly_and_recovers(sq: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a AS SELECT 1 AS x;\n")
    (workspace / "slow.sql").write_text("SELECT pg_sleep(20);\n")
    sq.prepare("-f", "a.sql", cwd=workspace)  # image resolved, base and a cached
    submitted = sq.run("prepare:psql", *sq.runtime_flags(), "--no-watch", "--", "-f", "a.sql", "-f", "slow.sql",
                       cwd=workspace)
    job_id = submitted.stdout.split()[0]
    wait_for(lambda: any(t["index"] == 2 and t["status"] == "running"
                         for t in api(sq, f"/v1/prepare-jobs/{job_id}")["tasks"]), what="step 2 running")
    stop_daemon(sq.runtime)
    watched = sq.run("watch", job_id)
    assert watched.returncode == 1, watched.stderr
    assert "Traceback" not in watched.stderr
    job = api(sq, f"/v1/prepare-jobs/{job_id}")
    assert job["status"] == "failed" and job["error"]["message"]
    status = sq.json("status")
    probe = next(p for p in status["runtimes"] if p["name"] == sq.runtime)
    assert probe["available"] is False and probe["reason"]
    refused = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-f", "a.sql", cwd=workspace)
    assert refused.returncode == 1 and "not available" in refused.stderr and "Traceback" not in refused.stderr

    services_up()  # the recovery path: bring the daemon back, restart the engine, prepare again
    sq.run("engine", "stop")
    assert sq.run("ls").returncode == 0
    known = {i["id"] for i in sq.instances()}
    owned = {c for iid in known for c in containers(sq.state_dir, f"sqlrs.instance={iid}")}
    stray = set(containers(sq.state_dir)) - owned
    assert not stray, stray  # the dead job's scratch container is gone
    dsn = sq.prepare("-f", "a.sql", "-f", "slow.sql", cwd=workspace)
    assert psql(dsn, "SELECT x FROM a") == "1"


def test_instances_come_back_after_the_daemon_does(sq: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a AS SELECT 1 AS x;\n")
    dsn = sq.prepare("-f", "a.sql", name="survivor", cwd=workspace)
    psql(dsn, "INSERT INTO a VALUES (2)")
    stop_daemon(sq.runtime)
    if sq.runtime == "docker":  # dockerd stops its containers on the way out
        listed = sq.instances()
        assert [i["status"] for i in listed] == ["missing"]
        failed = sq.run("run:psql", "--instance", "survivor", "--", "-c", "SELECT 1")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
    services_up()
    time.sleep(0.5)
    result = sq.run("run:psql", "--instance", "survivor", "--", "-At", "-c", "SELECT sum(x) FROM a")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    assert [i["status"] for i in sq.instances()] == ["running"]
