#!/usr/bin/env python3
"""The example suite with pytest -n 2 on sqlrs and on pytest-postgresql, cold and cached, in one run.

    .venv/bin/python examples/alembic-shop/bench/compare.py [--runs 2] [--snapshot btrfs|reflink]

Per backend: the wall time of the whole `pytest -n 2` run and how long each test waited for its
database (its setup phase: median, p90, max over all tests of those runs). The first run is cold:
sqlrs on a fresh state dir builds one state per revision (the base state is made first, as every
chain of a runtime shares it); pytest-postgresql starts a server per worker and migrates a template
database in each. Later runs: sqlrs finds the states cached; pytest-postgresql does it all again
(it caches nothing between runs). pytest-postgresql runs as user postgres (its initdb refuses root)
from a virtualenv of its own; sqlrs from one holding sqlrs, pytest, pytest-xdist and anyio. The
tests are the example's own; pg_backend.py gives them the sqlrs fixture names on pytest-postgresql.
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

BENCH = Path(__file__).resolve().parent
EXAMPLE = BENCH.parent
REPO = EXAMPLE.parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PG_VENV = Path(os.environ.get("SHOP_PG_VENV", "/tmp/sqlrs-bench-shop-pgvenv"))
PG_PACKAGES = ["pytest", "pytest-xdist", "pytest-postgresql", "psycopg[binary]", "sqlalchemy[asyncio]", "alembic",
               "anyio"]
SQLRS_VENV = Path(os.environ.get("SHOP_SQLRS_VENV", "/tmp/sqlrs-bench-shop-sqlrsvenv"))


def venv(path: Path, packages: list[str]) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
                       check=True)
    return python


def run_suite(label: str, argv: list[str], env: dict[str, str], user: str | None = None) -> dict[str, object]:
    timings = Path(tempfile.mkstemp(prefix="shop-timings-", suffix=".jsonl")[1])
    os.chmod(timings, 0o666)
    full_env = {**env, "SHOP_TIMINGS": str(timings), "PYTHONPATH": str(BENCH), "PYTHONDONTWRITEBYTECODE": "1"}
    # test_downgrades asks sqlrs' check:alembic, which pytest-postgresql has no counterpart of
    command = [*argv, "-p", "timing", "-n", "2", "-q", "-p", "no:cacheprovider", "--ignore=tests/test_downgrades.py"]
    if user:
        command = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in full_env.items()
                                                          if k.startswith(("SHOP_", "PATH", "HOME", "LANG", "PYTHON"))),
                   *command]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=EXAMPLE, env=full_env, capture_output=True, text=True, check=False,
                            timeout=1800)
    wall = time.perf_counter() - started
    waits = [json.loads(line)["wait_seconds"] for line in timings.read_text().splitlines() if line.strip()]
    timings.unlink(missing_ok=True)
    summary = [re.sub(r"(, \d+ warnings?)? in [\d.]+s.*", "", line).strip("= ")
               for line in result.stdout.splitlines() if " passed" in line or " failed" in line]
    if result.returncode != 0:
        sys.stderr.write(f"--- {label}: exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n")
    print(f"  {label}: {wall:.1f} s", file=sys.stderr, flush=True)
    return {"label": label, "wall": wall, "waits": waits, "ok": result.returncode == 0,
            "summary": summary[-1] if summary else f"exit {result.returncode}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="cached runs per backend after the cold one")
    parser.add_argument("--snapshot", choices=["btrfs", "reflink"], help="sqlrs on a loopback CoW store (root)")
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SQLRS_")}
    sqlrs_python = venv(SQLRS_VENV, ["pytest", "pytest-xdist", "anyio", str(REPO)])
    # this checkout as it is now, not the one the venv was made from (its code and its entry points)
    subprocess.run([str(sqlrs_python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--force-reinstall", str(REPO)], check=True)
    pg_python = venv(PG_VENV, PG_PACKAGES)
    state_dir = Path(tempfile.mkdtemp(prefix="sqshop", dir="/tmp"))
    rows = []
    try:
        sqlrs_env = {**base_env, "SQLRS_STATE_DIR": str(state_dir)}
        cli = [str(sqlrs_python), "-m", "sqlrs", "--state-dir", str(state_dir)]
        if args.snapshot:
            subprocess.run([*cli, "init", "local", "--snapshot", args.snapshot, "--store-size", "8G"], check=True,
                           capture_output=True)
        # the base state (initdb) is shared by every chain of the runtime: made once per machine
        subprocess.run([*cli, "prepare:psql", "--", "-c", "SELECT 1"], env=sqlrs_env, check=True, capture_output=True)
        sqlrs = [str(sqlrs_python), "-m", "pytest"]
        pg = [str(pg_python), "-m", "pytest", "-p", "no:sqlrs", "-p", "pg_backend"]
        pg_env = {**base_env, "HOME": "/tmp"}
        rows.append(run_suite("sqlrs, cold (one state per revision built)", sqlrs, sqlrs_env))
        rows.append(run_suite("pytest-postgresql, first run", pg, pg_env, user="postgres"))
        for _ in range(args.runs):  # interleaved: both see the same machine
            rows.append(run_suite("sqlrs, cached", sqlrs, sqlrs_env))
            rows.append(run_suite("pytest-postgresql, again", pg, pg_env, user="postgres"))
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
    print("| run (pytest -n 2) | result | wall | wait for a database: median | p90 | max |")
    print("|---|---|---:|---:|---:|---:|")
    grouped: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        grouped.setdefault(str(row["label"]), []).append(row)
    for label, group in grouped.items():
        waits = sorted(w for row in group for w in row["waits"])  # type: ignore[attr-defined]
        waits = waits or [0.0]
        wall = statistics.mean(float(row["wall"]) for row in group)  # type: ignore[arg-type]
        p90 = waits[min(len(waits) - 1, round(0.9 * (len(waits) - 1)))]
        print(f"| {label}{f' (mean of {len(group)})' if len(group) > 1 else ''} | {group[0]['summary']} "
              f"| {wall:.1f} s | {statistics.median(waits) * 1000:.0f} ms | {p90 * 1000:.0f} ms "
              f"| {waits[-1] * 1000:.0f} ms |")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
