"""Jobs a person can follow and steer: detach, re-attach, cancel, plan, names, JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pexpect
from harness import DATASETS, Sqlrs, api, processes_mentioning, psql, wait_for, write

SAKILA = DATASETS / "sakila"
SAKILA_FILES = ("-f", "1-postgres-sakila-schema.sql", "-f", "2-postgres-sakila-insert-data-using-copy.sql")


def test_detached_prepare_reattaches_with_complete_events(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    submitted = sq.run("prepare:psql", "--runtime", "native", "--no-watch", "--", *SAKILA_FILES, cwd=SAKILA)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    # a watcher that reads part of the stream and goes away, then another that resumes
    partial = api(sq, f"/v1/prepare-jobs/{job_id}/events?follow=0")
    watched = sq.run("watch", job_id)
    assert watched.returncode == 0, watched.stderr
    dsn = watched.stdout.strip()
    assert psql(dsn, "SELECT count(*) FROM rental") == "16044"
    events = api(sq, f"/v1/prepare-jobs/{job_id}/events")
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "events are numbered without gaps"
    assert events[: len(partial)] == partial
    resumed = api(sq, f"/v1/prepare-jobs/{job_id}/events?after={len(partial)}")
    assert partial + resumed == events
    kinds = [e["type"] for e in events]
    assert "plan" in kinds and kinds[-1] == "status" and events[-1]["data"]["status"] == "succeeded"
    done = {(e["data"]["index"], e["data"]["status"]) for e in events if e["type"] == "task"}
    assert {(1, "running"), (1, "done"), (2, "running"), (2, "done")} <= done
    result = next(e for e in events if e["type"] == "result")
    assert result["data"]["dsn"] == dsn


def slow_step_running(sq: Sqlrs) -> bool:
    jobs = api(sq, "/v1/prepare-jobs")
    return any(t["index"] == 2 and t["status"] == "running"
               for job in jobs for t in api(sq, f"/v1/prepare-jobs/{job['id']}")["tasks"])


def test_interactive_detach_then_stop_from_watch(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT 1 AS x;\n")
    write(workspace / "slow.sql", "SELECT pg_sleep(60);\n")
    write(workspace / "c.sql", "CREATE TABLE c (x int);\n")
    args = ["-m", "sqlrs", "prepare:psql", "--runtime", "native", "--", "-f", "a.sql", "-f", "slow.sql", "-f", "c.sql"]
    child = pexpect.spawn(sys.executable, args, cwd=str(workspace), env=sq.env, encoding="utf-8", timeout=90,
                          dimensions=(40, 160))
    child.expect("building")
    wait_for(lambda: slow_step_running(sq), what="slow.sql building")
    child.sendintr()
    child.expect(r"\[s\]top, \[d\]etach or \[c\]ontinue")
    child.sendline("d")
    child.expect(r"detached: job (\w+) keeps running")
    job_id = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert api(sq, f"/v1/prepare-jobs/{job_id}")["status"] == "running"

    watcher = pexpect.spawn(sys.executable, ["-m", "sqlrs", "watch", job_id], env=sq.env, encoding="utf-8",
                            timeout=90, dimensions=(40, 160))
    watcher.expect("building")
    assert slow_step_running(sq)
    watcher.sendintr()
    watcher.expect(r"\[s\]top, \[d\]etach or \[c\]ontinue")
    watcher.sendline("s")
    watcher.expect(r"stop the job\?")
    watcher.sendline("y")
    watcher.expect("cancel")
    watcher.expect(pexpect.EOF)
    watcher.close()
    assert watcher.exitstatus == 1
    job = api(sq, f"/v1/prepare-jobs/{job_id}")
    assert job["status"] == "cancelled"
    statuses = {t["index"]: t["status"] for t in job["tasks"]}
    assert statuses[1] == "done" and statuses[2] == "failed" and statuses[3] == "skipped"
    plan = sq.plan("-f", "a.sql", "-f", "slow.sql", "-f", "c.sql", cwd=workspace)
    # what was kept stays: the base (a.sql cost too little to keep: the next build replays it)
    assert [p["cached"] for p in plan] == [True, False, False, False]
    assert sq.instances() == []
    scratch = sq.state_dir / "store" / "scratch"
    assert list(scratch.iterdir()) == []
    assert not processes_mentioning(str(scratch))
    assert not [cmd for _, cmd in processes_mentioning("pg_sleep")]


def test_cancel_through_the_api_stops_psql_promptly(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "slow.sql", "SELECT pg_sleep(120);\n")
    submitted = sq.run("prepare:psql", "--runtime", "native", "--no-watch", "--", "-f", "slow.sql", cwd=workspace)
    job_id = submitted.stdout.split()[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = api(sq, f"/v1/prepare-jobs/{job_id}")["tasks"]
        if any(t["index"] == 1 and t["status"] == "running" for t in tasks):
            break
        time.sleep(0.1)
    started = time.monotonic()
    api(sq, f"/v1/prepare-jobs/{job_id}/cancel", method="POST")
    while api(sq, f"/v1/prepare-jobs/{job_id}")["status"] == "running" and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert api(sq, f"/v1/prepare-jobs/{job_id}")["status"] == "cancelled"
    assert time.monotonic() - started < 10
    assert list((sq.state_dir / "store" / "scratch").iterdir()) == []
    watched = sq.run("watch", job_id)
    assert watched.returncode == 1 and "cancel" in watched.stderr


def test_plan_after_editing_step_two_of_three(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    for name, sql in (("1.sql", "CREATE TABLE a (x int);"), ("2.sql", "CREATE TABLE b (x int);"),
                      ("3.sql", "CREATE TABLE c (x int);")):
        write(workspace / name, sql + "\n")
    args = ("-f", "1.sql", "-f", "2.sql", "-f", "3.sql")
    sq.prepare(*args, cwd=workspace)
    write(workspace / "2.sql", "CREATE TABLE b (x bigint);\n")
    plan = sq.plan(*args, cwd=workspace)
    # 1.sql's state was not kept (too cheap), the first build passed it: a branch point now
    assert [(p["index"], p["cached"], p["keep"]) for p in plan] == [
        (0, True, "start"), (1, False, "branch point"), (2, False, "before the last step"), (3, False, "last step")]
    assert [p["source"] for p in plan[1:]] == ["1.sql", "2.sql", "3.sql"]
    assert all(p["kind"] in ("base", "file") for p in plan)
    table = sq.run("plan:psql", "--runtime", "native", "--", *args, cwd=workspace)
    lines = table.stdout.splitlines()
    assert "cached" in lines[1] and "build" in lines[2] and "build" in lines[3] and "build" in lines[4]
    assert "branch point" in lines[2] and "builds from #0" in table.stderr


def test_names_reuse_and_fresh(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    write(workspace / "b.sql", "CREATE TABLE b (x int);\n")
    first = sq.prepare("-f", "a.sql", name="dev", cwd=workspace)
    taken = sq.run("prepare:psql", "--runtime", "native", "--name", "dev", "--", "-f", "a.sql", cwd=workspace)
    assert taken.returncode == 1 and "--reuse" in taken.stderr
    reused = sq.run("prepare:psql", "--runtime", "native", "--name", "dev", "--reuse", "--", "-f", "a.sql",
                    cwd=workspace)
    assert reused.returncode == 0 and reused.stdout.strip() == first
    old_id = sq.instances()[0]["id"]
    fresh = sq.run("prepare:psql", "--runtime", "native", "--name", "dev", "--fresh", "--", "-f", "a.sql",
                   cwd=workspace)
    assert fresh.returncode == 0 and fresh.stdout.strip() != first
    instances = sq.instances()
    assert len(instances) == 1 and instances[0]["id"] != old_id and instances[0]["name"] == "dev"
    assert not (sq.state_dir / "store" / "instances" / old_id).exists()
    changed = sq.run("prepare:psql", "--runtime", "native", "--name", "dev", "--reuse", "--", "-f", "b.sql",
                     cwd=workspace)
    assert changed.returncode == 0
    instances = sq.instances()
    assert len(instances) == 1 and instances[0]["dsn"] == changed.stdout.strip()
    assert psql(changed.stdout.strip(), "SELECT to_regclass('b') IS NOT NULL") == "t"
    run = sq.run("run:psql", "--instance", "dev", "--", "-At", "-c", "SELECT to_regclass('a') IS NULL")
    assert run.stdout.strip() == "t"
    bad = sq.run("prepare:psql", "--reuse", "--", "-f", "a.sql", cwd=workspace)
    assert bad.returncode == 2


def test_tree_and_json_everywhere(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "base.sql", "CREATE TABLE t (x int);\n")
    write(workspace / "left.sql", "INSERT INTO t VALUES (1);\n")
    write(workspace / "right.sql", "INSERT INTO t VALUES (2);\n")
    sq.prepare("-f", "base.sql", "-f", "left.sql", name="left", cwd=workspace)
    sq.prepare("-f", "base.sql", "-f", "right.sql", name="right", cwd=workspace)
    tree = sq.run("ls", "--tree")
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert any("base.sql" in line for line in lines)
    assert sum("left.sql" in line or "right.sql" in line for line in lines) == 2
    assert sum("[left]" in line or "[right]" in line for line in lines) == 2
    branch = next(i for i, line in enumerate(lines) if "base.sql" in line)
    assert lines[branch + 1].lstrip().startswith(("├──", "└──"))
    for args in (["ls"], ["ls", "--states"], ["ls", "--names"], ["ls", "--jobs"], ["ls", "--tree"], ["status"],
                 ["status", "--cache"], ["config", "get"], ["engine", "status"]):
        result = sq.run(*args, "-o", "json")
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)
