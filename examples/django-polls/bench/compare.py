#!/usr/bin/env python3
"""The polls suite (15 tests, 2 workers) with sqlrs test databases against plain Django; prints timings.

    .venv/bin/python examples/django-polls/bench/compare.py [--runs 3] [--only manage,pytest]

Both runners, both ways, in one run:
- `manage.py test --parallel 2` with Django's own runner (creates test_postgres, runs the 25
  migrations, clones it per worker) and with `sqlrs.django.DiscoverRunner`;
- `pytest -n 2` with pytest-django's own `django_db_setup` (each worker creates and migrates
  test_postgres_gwN) and with the sqlrs plugin's (`sqlrs_django = true`).
sqlrs runs on a fresh state directory: its first run ("cold") builds the 25 migration states,
later runs ("cached") find them. Plain Django has nothing to cache (its --keepdb / --reuse-db keep a
database whose rows TransactionTestCase flushed: the suite's second run fails on it).

Per configuration: the median wall time of the whole command, and how long the tests waited for
their databases before the first one ran: Django's "Total database setup" (`--timing`), pytest's
`django_db_setup` in each worker (bench/timing_plugin.py; the slower worker counts); for pytest
also each test's setup phase (median, max: the first test of a worker waits for the databases).
Ratios are against plain Django measured in the same run.

Plain Django needs a server: an sqlrs instance of an empty state (its own state directory), so both
sides use the same PostgreSQL build and settings (fsync off). Native runtime.
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
from urllib.parse import urlsplit

EXAMPLE = Path(__file__).resolve().parents[1]
REPO = EXAMPLE.parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
TESTS = 15


def sqlrs(state_dir: Path, *args: str) -> str:
    result = subprocess.run([PYTHON, "-m", "sqlrs", "--state-dir", str(state_dir), *args], capture_output=True,
                            text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"sqlrs {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def server_env(dsn: str) -> dict[str, str]:
    """The plain runs' server in libpq's variables (the example's settings read them)."""
    url = urlsplit(dsn)
    return {"PGHOST": url.hostname or "", "PGPORT": str(url.port), "PGUSER": url.username or "",
            "PGPASSWORD": url.password or "", "PGDATABASE": url.path.lstrip("/")}


def run(label: str, argv: list[str], env: dict[str, str]) -> dict[str, object]:
    timings = Path(tempfile.mkstemp(prefix="polls-timings-", suffix=".jsonl")[1])
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=EXAMPLE, env={**env, "POLLS_BENCH_TIMINGS": str(timings)},
                            capture_output=True, text=True, check=False, timeout=1800)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    timings.unlink(missing_ok=True)
    output = result.stdout + result.stderr
    setup = [r["seconds"] for r in records if r["kind"] == "db_setup"]
    match = re.search(r"Total database setup took ([\d.]+)s", output)
    waits = [float(match.group(1))] if match else setup
    passed = re.search(rf"Ran {TESTS} tests.*?\n\nOK|{TESTS} passed", output, flags=re.S) is not None
    ok = result.returncode == 0 and passed
    if not ok:
        sys.stderr.write(f"--- {label}: exit {result.returncode}\n{output[-4000:]}\n")
    return {"label": label, "wall": wall, "db_wait": max(waits) if waits else None, "ok": ok,
            "test_setups": [r["seconds"] for r in records if r["kind"] == "test_setup"]}


def merge(label: str, runs: list[dict[str, object]]) -> dict[str, object]:
    """Several runs of one configuration: medians, every test's setup together."""
    waits = [float(r["db_wait"]) for r in runs if r["db_wait"] is not None]  # type: ignore[arg-type]
    return {"label": label + (f" (median of {len(runs)})" if len(runs) > 1 else ""),
            "wall": statistics.median(float(r["wall"]) for r in runs),  # type: ignore[arg-type]
            "db_wait": statistics.median(waits) if waits else None, "ok": all(r["ok"] for r in runs),
            "test_setups": [s for r in runs for s in r["test_setups"]]}  # type: ignore[attr-defined]


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def ratio(baseline: dict[str, object] | None, row: dict[str, object], key: str) -> str:
    if baseline is None or row is baseline or not baseline[key] or not row[key]:
        return "-"
    return f"{float(baseline[key]) / float(row[key]):.1f}x"  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each cached / plain configuration (default 3)")
    parser.add_argument("--only", default="manage,pytest", help="manage, pytest or both (default)")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SQLRS_", "PG", "DJANGO_"))}
    base_env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), base_env.get("PYTHONPATH", "")])
    server_dir = Path(tempfile.mkdtemp(prefix="sqbs", dir="/tmp"))
    groups: list[list[dict[str, object]]] = []
    state_dirs = [server_dir]
    try:
        dsn = sqlrs(server_dir, "prepare:psql", "--runtime", "native", "--", "-c", "SELECT 1")
        plain_env = {**base_env, **server_env(dsn)}
        manage = [PYTHON, "manage.py", "test", "--parallel", "2", "--timing"]
        # the apps' TestCases, as manage.py test runs them: tests/ holds the backwards check, which
        # takes no test database
        pytest = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "timing_plugin", "-n", "2",
                  "--ignore", "tests"]
        for name, plain, with_sqlrs in (
                ("manage", [*manage, "--testrunner", "django.test.runner.DiscoverRunner"],
                 [*manage, "--sqlrs-runtime", "native"]),
                ("pytest", [*pytest, "-o", "sqlrs_django=false"], [*pytest, "--sqlrs-runtime", "native"])):
            if name not in wanted:
                continue
            state_dir = Path(tempfile.mkdtemp(prefix="sqbd", dir="/tmp"))
            state_dirs.append(state_dir)
            sqlrs_env = {**base_env, "SQLRS_STATE_DIR": str(state_dir)}
            what = "manage.py test --parallel 2" if name == "manage" else "pytest -n 2"
            rows = [merge(f"{what}, plain Django", [run("plain", plain, plain_env) for _ in range(args.runs)]),
                    merge(f"{what}, sqlrs, cold (builds 25 states)", [run("cold", with_sqlrs, sqlrs_env)]),
                    merge(f"{what}, sqlrs, cached", [run("cached", with_sqlrs, sqlrs_env)
                                                      for _ in range(args.runs)])]
            groups.append(rows)
    finally:
        for state_dir in state_dirs:
            subprocess.run([PYTHON, "-m", "sqlrs", "--state-dir", str(state_dir), "engine", "stop"],
                           capture_output=True, check=False)
            shutil.rmtree(state_dir, ignore_errors=True)
    print(f"| configuration ({TESTS} tests, 2 workers) | result | wall | vs plain | wait for the databases | "
          "vs plain | test setup: median | max |")
    print("|---|---|---|---|---|---|---|---|")
    for rows in groups:
        baseline = rows[0]
        for row in rows:
            setups = sorted(row["test_setups"])  # type: ignore[type-var]
            print(f"| {row['label']} | {'ok' if row['ok'] else 'FAILED'} | {float(row['wall']):.2f} s "  # type: ignore[arg-type]
                  f"| {ratio(baseline, row, 'wall')} | {ms(row['db_wait'])} | {ratio(baseline, row, 'db_wait')} | "  # type: ignore[arg-type]
                  f"{ms(statistics.median(setups)) if setups else '-'} | {ms(setups[-1]) if setups else '-'} |")
    print("\nwait for the databases: manage.py, Django's 'Total database setup'; pytest, the slower worker's "
          "django_db_setup. Ratios: plain Django's median over this row's (above 1x: sqlrs is faster).")
    return 0 if all(row["ok"] for rows in groups for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
