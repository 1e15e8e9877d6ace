#!/usr/bin/env python3
"""Run the example suite with pytest -n 2 on sqlrs, testcontainers and pytest-postgresql; print timings.

    .venv/bin/python examples/pytest-sakila/bench/compare.py [--runs 2] [--only sqlrs,testcontainers,...]
                                                              [--snapshot btrfs|reflink]

Per backend: wall time of the whole `pytest -n 2` run (start-up, data loading, 22 tests,
teardown) and how long each test waited for its database (the conftest's `db` fixture, the same
code for every backend: median and max over all tests of all runs). sqlrs runs on a fresh state
directory (the default store a newcomer gets, or after `sqlrs init local --snapshot X` with
--snapshot): its first run builds the Sakila state, later runs find it cached; with a warm pool of
16 the plugin also reports its own claim times. Needs root (docker, and `runuser` for
pytest-postgresql, whose initdb refuses to run as root and which therefore runs as user postgres
from a virtualenv of its own made with the system python3: root's Python is not readable by
postgres). See backends.py for what each baseline had to adapt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1]
REPO = EXAMPLE.parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PG_VENV = Path(os.environ.get("SAKILA_PG_VENV", "/tmp/sqlrs-bench-pgvenv"))
PG_VENV_PACKAGES = ["pytest", "pytest-xdist", "pytest-postgresql", "psycopg[binary]"]
# sqlrs runs from a virtualenv of its own too, holding what a user of the plugin installs (sqlrs,
# pytest, pytest-xdist): the repository's .venv also loads hypothesis, pytest-postgresql and other
# test tools' plugins into every pytest process, which is no part of sqlrs' cost
SQLRS_VENV = Path(os.environ.get("SAKILA_SQLRS_VENV", "/tmp/sqlrs-bench-sqlrsvenv"))


def run_suite(label: str, argv: list[str], env: dict[str, str], user: str | None = None) -> dict[str, object]:
    timings = Path(tempfile.mkstemp(prefix="sakila-timings-", suffix=".jsonl")[1])
    os.chmod(timings, 0o666)
    report = Path(tempfile.mkstemp(prefix="sakila-sqlrs-", suffix=".json")[1])
    os.chmod(report, 0o666)
    full_env = {**env, "SAKILA_TIMINGS": str(timings)}
    command = [*argv, "-n", "2", "-q", "-p", "no:cacheprovider"]
    if "SQLRS_STATE_DIR" in env:
        command.append(f"--sqlrs-report={report}")
    if user:
        command = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in full_env.items()
                                                          if k.startswith(("SAKILA_", "PATH", "HOME", "LANG"))),
                   *command]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=EXAMPLE, env=full_env, capture_output=True, text=True, check=False,
                            timeout=1800)
    wall = time.perf_counter() - started
    waits = [json.loads(line)["wait_seconds"] for line in timings.read_text().splitlines() if line.strip()]
    claims: list[float] = []
    if report.stat().st_size:
        claims = [w["wait_seconds"] for w in json.loads(report.read_text())["waits"]]
    timings.unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    summary = [re.sub(r"(, \d+ warnings?)? in [\d.]+s.*", "", line).strip("= ")
               for line in result.stdout.splitlines() if " passed" in line or " failed" in line]
    ok = result.returncode == 0
    if not ok:
        sys.stderr.write(f"--- {label}: exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n")
    return {"label": label, "wall": wall, "waits": waits, "claims": claims, "ok": ok,
            "summary": summary[-1] if summary else f"exit {result.returncode}"}


def ensure_pg_venv() -> Path:
    python = PG_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(PG_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *PG_VENV_PACKAGES], check=True)
    return python


def ensure_sqlrs_venv() -> Path:
    python = SQLRS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(SQLRS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "pytest", "pytest-xdist", "-e", str(REPO), "--config-settings", "editable_mode=compat"],
                       check=True)
    # the entry points (pytest11, runtimes, stores) as this checkout declares them now
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "-e", str(REPO), "--config-settings", "editable_mode=compat"], check=True)
    return python


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs per backend after the first (default 2)")
    parser.add_argument("--only", default="sqlrs,sqlrs-pool,testcontainers,pytest-postgresql")
    parser.add_argument("--snapshot", choices=["btrfs", "reflink"],
                        help="run sqlrs on a loopback btrfs/XFS store (`sqlrs init local --snapshot`, root)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SQLRS_", "SAKILA_BACKEND"))}
    rows = []
    state_dir = Path(tempfile.mkdtemp(prefix="sqbench", dir="/tmp"))
    try:
        sqlrs_env = {**base_env, "SAKILA_BACKEND": "sqlrs", "SQLRS_STATE_DIR": str(state_dir)}
        pytest = [str(VENV_PYTHON), "-m", "pytest"]  # testcontainers is in the repository's .venv
        if wanted & {"sqlrs", "sqlrs-pool"}:
            sqlrs_pytest = [str(ensure_sqlrs_venv()), "-m", "pytest"]
        if args.snapshot:
            subprocess.run([str(VENV_PYTHON), "-m", "sqlrs", "--state-dir", str(state_dir), "init", "local",
                            "--snapshot", args.snapshot, "--store-size", "8G"], check=True, capture_output=True)
        if wanted & {"sqlrs", "sqlrs-pool"}:
            rows.append(run_suite("sqlrs, first run (builds the state), no pool", [*sqlrs_pytest, "--sqlrs-pool=0"],
                                  sqlrs_env))
        if "sqlrs" in wanted:
            runs = [run_suite("sqlrs, cached state, no pool", [*sqlrs_pytest, "--sqlrs-pool=0"], sqlrs_env)
                    for _ in range(args.runs)]
            rows.append(merge(runs))
        if "sqlrs-pool" in wanted:
            runs = [run_suite("sqlrs, cached state, warm pool of 8", [*sqlrs_pytest, "--sqlrs-pool=8"], sqlrs_env)
                    for _ in range(args.runs)]
            rows.append(merge(runs))
        if "testcontainers" in wanted:
            env = {**base_env, "SAKILA_BACKEND": "testcontainers"}
            rows.append(merge([run_suite("testcontainers (local image, template DB per test)", pytest, env)
                               for _ in range(args.runs)]))
        if "pytest-postgresql" in wanted:
            python = ensure_pg_venv()
            env = {**base_env, "SAKILA_BACKEND": "pytest-postgresql", "HOME": "/tmp"}
            rows.append(merge([run_suite("pytest-postgresql (pg_ctl 15, template DB per test)",
                                         [str(python), "-m", "pytest"], env, user="postgres")
                               for _ in range(args.runs)]))
    finally:
        cli = [str(VENV_PYTHON), "-m", "sqlrs", "--state-dir", str(state_dir)]
        # instances outlive their engine: a server left on a removed state dir would run on
        listed = subprocess.run([*cli, "ls", "--instances", "-o", "json"], capture_output=True, text=True, check=False)
        for instance in json.loads(listed.stdout or "[]") if listed.returncode == 0 else []:
            subprocess.run([*cli, "rm", "--force", instance["id"]], capture_output=True, check=False)
        subprocess.run([*cli, "engine", "stop"], capture_output=True, check=False)
        if args.snapshot:
            subprocess.run(["umount", str(state_dir / "store")], capture_output=True, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    print("| backend (pytest -n 2, 22 tests) | result | wall time | wait for a fresh DB: median | p90 | max* |"
          " sqlrs plugin's claim median |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        waits = sorted(row["waits"] or [0.0])  # type: ignore[type-var]
        claims = row["claims"]
        p90 = waits[min(len(waits) - 1, round(0.9 * (len(waits) - 1)))]
        print(f"| {row['label']} | {row['summary']} | {row['wall']:.1f} s | {ms(statistics.median(waits))} | "
              f"{ms(p90)} | {ms(waits[-1])} | {ms(statistics.median(claims)) if claims else '-'} |")
    print("\n*the first test of each worker also waits for one-time setup: container start and load, "
          "state build, pool fill")
    return 0 if all(row["ok"] for row in rows) else 1


def merge(runs: list[dict[str, object]]) -> dict[str, object]:
    """Several runs of one backend: mean wall time, all waits together."""
    first = dict(runs[0])
    first["wall"] = statistics.mean(float(r["wall"]) for r in runs)  # type: ignore[arg-type]
    first["waits"] = [w for r in runs for w in r["waits"]]  # type: ignore[attr-defined]
    first["claims"] = [c for r in runs for c in r["claims"]]  # type: ignore[attr-defined]
    first["ok"] = all(r["ok"] for r in runs)
    first["summary"] = "; ".join(sorted({str(r["summary"]) for r in runs}))
    if len(runs) > 1:
        first["label"] = f"{first['label']} (mean of {len(runs)})"
    return first


if __name__ == "__main__":
    sys.exit(main())
