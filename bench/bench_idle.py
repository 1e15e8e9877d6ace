#!/usr/bin/env python3
"""What the engine keeps after test suites end: servers, database copies and memory, then the next run.

    .venv/bin/python bench/bench_idle.py [--idle 30] [--json out.json] [--python PYTHON]

On a fresh state directory (the default store, native runtime): the pytest-sakila and
alembic-shop example suites (`pytest -n 2`) run, a migration of alembic-shop is edited (on a copy
of the example, the repository is not touched), both suites run again, then nothing happens for
`--idle` seconds. Then the sakila suite runs once more (the "next run after idle").

Printed: the most servers (postmasters of this state dir, from `ps`) seen while the suites ran;
after the idle time: servers from `ps` and from `sqlrs status -o json` (its footprint when the
engine reports one), database copies made ahead, whether anything of the superseded state (the
old alembic head) is still up; the wall time of every suite run. Works on any revision of sqlrs
(older ones have no footprint in `status`: then the shared servers' `ready` counts are used), so
the same script measures before and after a change: `--python` names the interpreter of a
virtualenv holding the sqlrs to measure (with pytest and pytest-xdist; default the repository's
.venv).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = [str(REPO / ".venv" / "bin" / "python")]  # set by --python
SAKILA = REPO / "examples" / "pytest-sakila"
SHOP = REPO / "examples" / "alembic-shop"
EDITED = "alembic/versions/0007_merge_backfill.py"


def postmasters(state_dir: Path) -> list[dict[str, Any]]:
    """PostgreSQL servers whose data directory is under `state_dir` (postmasters only: `-D DIR`)."""
    out = subprocess.run(["ps", "-eo", "pid=,rss=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        pid, rss, args = line.split(None, 2)
        words = args.split()
        if "-D" in words and str(state_dir) in args and "postgres" in words[0]:
            data_dir = words[words.index("-D") + 1]
            found.append({"pid": int(pid), "rss_kib": int(rss), "data_dir": data_dir})
    return found


class Sampler(threading.Thread):
    """Counts this state dir's servers every 0.2 s; keeps the maximum."""

    def __init__(self, state_dir: Path):
        super().__init__(daemon=True)
        self.state_dir = state_dir
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.most = max(self.most, len(postmasters(self.state_dir)))
            self.stop.wait(0.2)


def sqlrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYTHON, "-m", "sqlrs", *args], env=env, capture_output=True, text=True,
                          check=False, timeout=600)


def suite(label: str, directory: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run([*PYTHON, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"], cwd=directory,
                            env=env, capture_output=True, text=True, check=False, timeout=1800)
    wall = time.perf_counter() - started
    summary = [line for line in result.stdout.splitlines() if " passed" in line or " failed" in line]
    waits = re.search(r"wait for a fresh instance: median ([\d.]+) ms, p90 ([\d.]+) ms", result.stdout)
    if result.returncode != 0:
        sys.stderr.write(f"--- {label}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n")
    print(f"{label}: {summary[-1] if summary else result.returncode} ({wall:.1f} s)", flush=True)
    return {"label": label, "wall_seconds": round(wall, 2), "ok": result.returncode == 0,
            "wait_median_ms": float(waits.group(1)) if waits else None,
            "wait_p90_ms": float(waits.group(2)) if waits else None}


def copies_ready(status: dict[str, Any]) -> int:
    footprint = status.get("footprint")
    if footprint:
        return int(footprint["copies_ready"])
    return sum(int(host.get("ready", 0)) for host in status.get("shared_servers", []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle time after the suites (30)")
    parser.add_argument("--json", help="write the numbers here too")
    parser.add_argument("--python", default=PYTHON[0], help="the interpreter whose sqlrs is measured")
    args = parser.parse_args()
    PYTHON[0] = args.python
    work = Path(tempfile.mkdtemp(prefix="sqidle", dir="/tmp"))
    os.chmod(work, 0o755)  # PostgreSQL runs as another user and must reach its data directories
    state_dir = work / "state"
    shop = work / "alembic-shop"
    shutil.copytree(SHOP, shop, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLRS_")}
    env.update(SQLRS_STATE_DIR=str(state_dir), SQLRS_CONTAINER_RUNTIME="native")
    if "SAKILA_DIR" not in env:  # the data sets beside the repository (or beside its worktrees' parent)
        env["SAKILA_DIR"] = str(next((p / "shared" / "datasets" / "sakila" for p in REPO.parents
                                      if (p / "shared" / "datasets" / "sakila").is_dir()), ""))
    sampler = Sampler(state_dir)
    sampler.start()
    runs = []
    try:
        runs.append(suite("sakila, run 1", SAKILA, env))
        runs.append(suite("alembic-shop, run 1", shop, env))
        states_before = json.loads(sqlrs(env, "ls", "--states", "-o", "json").stdout)
        edited = shop / EDITED
        # a change of code, not of comments (those may not change the state), that keeps the tests green
        docstring = '    """Upgrade schema."""\n'
        statement = '    op.execute("COMMENT ON TABLE products IS \'catalogue\'")\n'
        edited.write_text(edited.read_text().replace(docstring, docstring + statement, 1))
        runs.append(suite("sakila, run 2", SAKILA, env))
        runs.append(suite("alembic-shop, run 2 (0007 edited)", shop, env))
        during = sampler.most
        sampler.stop.set()
        # the old alembic head: the state of revision 0007 before the edit
        superseded = {s["id"] for s in states_before if "0007" in s["source"]}
        time.sleep(args.idle)
        status = json.loads(sqlrs(env, "status", "-o", "json").stdout)
        servers = postmasters(state_dir)
        hosts = status.get("shared_servers", [])
        warm = status.get("warm") or {}
        with_servers = {h["state_id"] for h in hosts} | {w["state_id"] for w in warm.get("states", []) if w["ready"]}
        result: dict[str, Any] = {
            "most_servers_during_runs": during,
            "after_idle_seconds": args.idle,
            "servers_ps": len(servers),
            "servers_rss_kib_ps": sum(s["rss_kib"] for s in servers),
            "shared_servers": len(hosts),
            "warm_instances": warm.get("instances", 0),
            "copies_ready": copies_ready(status),
            "states_with_servers": sorted(s[:12] for s in with_servers),
            "superseded": sorted(s[:12] for s in superseded),
            "superseded_still_up": sorted(s[:12] for s in superseded & with_servers),
            "footprint": status.get("footprint"),
            "cache": status.get("cache"),
        }
        runs.append(suite("sakila, run 3 (after the idle time)", SAKILA, env))
        result["runs"] = runs
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0 if all(run["ok"] for run in runs) else 1
    finally:
        sampler.stop.set()
        sqlrs(env, "engine", "stop")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
