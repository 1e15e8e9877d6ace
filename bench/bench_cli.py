"""How long the CLI's hot commands take, as ratios against `python -c pass` measured in the same run.

    .venv/bin/python bench/bench_cli.py                          # 30 rounds, the CLI as installed
    .venv/bin/python bench/bench_cli.py --click                  # ... and forced through Click
    .venv/bin/python bench/bench_cli.py --before /tmp/old --json out.json
    .venv/bin/python bench/bench_cli.py --before /tmp/main --before-entry sqlrs.entrypoints.cli.fast:main

A fresh state dir under /tmp, the native runtime, one warm engine. Each command runs `--runs`
times; the commands (and the variants of the CLI) take turns, round robin, so load from
elsewhere on the machine spreads over all of them alike. Figures are medians (and the minimum
wall time); each process's own CPU time comes from wait4. Commands run through a console
script the way users and scripts start them: the installed `<venv>/bin/sqlrs` ("fast"), the same
with SQLRS_CLI_NO_FAST=1 (`--click`), and `--before DIR`: the sources in DIR (a checkout's root)
through a pip-style script for the old entry point `sqlrs.entrypoints.cli.main:main` (or
`--before-entry MODULE:FUNCTION`, e.g. today's, to compare two checkouts).

Besides process times it prints the engine's own time: for `status`, `ls` and `rm` the median
of the same HTTP requests made from this process, for a `prepare:psql` hit the job's
created -> finished time from its record. Last, the top entries of `python -X importtime` for
`sqlrs status`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlrs.entrypoints.cli.client import connect  # noqa: E402

MISSING_ID = "feedc0ffee00"  # hex, so rm looks it up as an instance and as a state
# what pip writes for a [project.scripts] entry point
SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {function}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({function}())
"""


def iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def spawn(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str]:
    """Run argv: (wall seconds, CPU seconds of the process itself, exit code, stdout)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL, env=env,
                                 cwd=cwd)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return wall, usage.ru_utime + usage.ru_stime, child.returncode, out.read().decode()


class Variant:
    """One way of starting the CLI: a script and the environment it runs in."""

    def __init__(self, label: str, script: str, env: dict[str, str]):
        self.label, self.script, self.env = label, script, env


class Bench:
    def __init__(self, python: str):
        self.python = python
        self.sqlrs = str(Path(python).parent / "sqlrs")
        self.state_dir = Path(tempfile.mkdtemp(prefix="sqb", dir="/tmp"))
        self.work = self.state_dir / "work"
        self.work.mkdir()
        (self.work / ".git").mkdir()  # the workspace root
        (self.work / "schema.sql").write_text("CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n")
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(self.state_dir), "SQLRS_ENGINE_IDLE_TIMEOUT": "3600"}
        for name in ("SQLRS_ENGINE_ADDR", "TAIDON_ENGINE_ADDR", "SQLRS_CLI_NO_FAST"):
            self.env.pop(name, None)

    def run(self, *argv: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(argv), capture_output=True, text=True, env=env or self.env, cwd=self.work,
                                stdin=subprocess.DEVNULL, check=False, timeout=600)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def sq(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(self.sqlrs, *args, check=check)

    def api(self, method: str, path: str) -> Any:
        return connect(self.state_dir, spawn=False).call(method, path, ok=(200, 201, 202, 400, 404))

    def close(self) -> None:
        if (self.state_dir / "engine.json").exists():
            try:
                for instance in json.loads(self.sq("ls", "-o", "json").stdout):
                    self.sq("rm", instance["id"], check=False)
            finally:
                self.sq("engine", "stop", check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--click", action="store_true", help="also run every command with SQLRS_CLI_NO_FAST=1")
    parser.add_argument("--before", metavar="DIR", help="also run the sources in DIR through the old entry point")
    parser.add_argument("--before-entry", metavar="MODULE:FUNCTION", default="sqlrs.entrypoints.cli.main:main",
                        help="the entry point the --before sources run through")
    parser.add_argument("--json", help="also write the figures here")
    options = parser.parse_args()
    # an editable install leaves sqlrs uncompiled; with PYTHONDONTWRITEBYTECODE every start would compile
    for root in (REPO, *([Path(options.before)] if options.before else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "sqlrs")], check=True)

    bench = Bench(sys.executable)
    variants = [Variant("fast", bench.sqlrs, bench.env)]
    if options.click:
        variants.append(Variant("click", bench.sqlrs, {**bench.env, "SQLRS_CLI_NO_FAST": "1"}))
    if options.before:
        old = bench.state_dir / "sqlrs-before"
        module, _, function = options.before_entry.partition(":")
        old.write_text(SCRIPT.format(python=sys.executable, module=module, function=function))
        old.chmod(0o755)
        variants.append(Variant("before", str(old), {**bench.env, "PYTHONPATH": str(Path(options.before).resolve())}))
    try:
        return measure(bench, variants, options)
    finally:
        bench.close()


COMMANDS: dict[str, list[str]] = {
    "sqlrs --help": ["--help"],
    "sqlrs status": ["status"],
    "sqlrs ls": ["ls"],
    f"sqlrs rm {MISSING_ID}": ["rm", MISSING_ID],
    "sqlrs run:psql -c 'select 1'": ["run:psql", "--instance", "bench", "--", "-c", "select 1"],
    "sqlrs prepare:psql --name --reuse (hit)": ["-q", "prepare:psql", "--name", "bench", "--reuse", "--",
                                                "-f", "schema.sql"],
    "sqlrs prepare:psql (hit, new instance)": ["-q", "prepare:psql", "--", "-f", "schema.sql"],
    # --runtime: the registered names, from the fast path's cache file (sqlrs/extensions.py)
    "sqlrs prepare:psql --runtime native --reuse": ["-q", "prepare:psql", "--runtime", "native", "--name", "bench",
                                                    "--reuse", "--", "-f", "schema.sql"],
}
REUSE, NEW = "sqlrs prepare:psql --name --reuse (hit)", "sqlrs prepare:psql (hit, new instance)"


def measure(bench: Bench, variants: list[Variant], options: argparse.Namespace) -> int:
    py = bench.python
    bench.sq("engine", "start")
    bench.sq("config", "set", "container.runtime", "native")
    bench.sq("-q", "prepare:psql", "--name", "bench", "--", "-f", "schema.sql")  # builds the chain once
    runs: list[tuple[str, str, list[str], dict[str, str]]] = [
        ("python -c pass", "", [py, "-c", "pass"], bench.env),
        ("python -S -c pass", "", [py, "-S", "-c", "pass"], bench.env),
    ]
    runs += [(name, v.label, [v.script, *args], v.env) for name, args in COMMANDS.items() for v in variants]
    engine_requests: dict[str, list[tuple[str, str]]] = {
        "status": [("GET", "/v1/status")],
        "ls": [("GET", "/v1/instances")],
        "rm": [("GET", f"/v1/instances/{MISSING_ID}"), ("GET", f"/v1/states/{MISSING_ID}")],
    }
    times: dict[tuple[str, str], list[float]] = {(n, v): [] for n, v, _, _ in runs}
    cpu: dict[tuple[str, str], list[float]] = {(n, v): [] for n, v, _, _ in runs}
    engine: dict[str, list[float]] = {name: [] for name in engine_requests}
    hit_dsns: list[str] = []
    for round_ in range(options.runs + 1):  # round 0 warms up: page cache, engine caches
        for name, label, argv, env in runs:
            wall, used, code, out = spawn(argv, env, bench.work)
            if code != 0:
                raise RuntimeError(f"{name} ({label}) failed with exit code {code}")
            if round_:
                times[name, label].append(wall)
                cpu[name, label].append(used)
            if name == NEW:
                hit_dsns.append(out.strip())
        for name, requests in engine_requests.items():
            started = time.perf_counter()
            for method, path in requests:
                bench.api(method, path)
            if round_:
                engine[name].append(time.perf_counter() - started)
        listed = json.loads(bench.sq("ls", "-o", "json").stdout)
        for instance in listed:  # untimed: remove what the timed hits started
            if instance["dsn"] in hit_dsns:
                bench.sq("rm", instance["id"])
        hit_dsns.clear()
    # the engine's own time for a hit: the job's record, created -> finished
    jobs = [j for j in bench.api("GET", "/v1/prepare-jobs") if j["status"] == "succeeded"]
    job_seconds: dict[bool, list[float]] = {True: [], False: []}
    for job in jobs[-options.runs * 2 * len(variants):]:
        reused = bool((job.get("result") or {}).get("reused"))
        job_seconds[reused].append(iso_seconds(job["finished_at"]) - iso_seconds(job["created_at"]))

    median = {key: statistics.median(values) for key, values in times.items()}
    minimum = {key: min(values) for key, values in times.items()}
    cpu_median = {key: statistics.median(values) for key, values in cpu.items()}
    base, base_s, base_min, base_cpu = (median["python -c pass", ""], median["python -S -c pass", ""],
                                        minimum["python -c pass", ""], cpu_median["python -c pass", ""])
    lines = ["wall time (median, x python -c pass, x python -S -c pass; minimum, x); CPU of the process (median, x)",
             f"{'command':40} {'CLI':>6} {'median':>9} {'x pass':>7} {'x -S':>6} {'min':>9} {'x':>6} "
             f"{'CPU':>8} {'x':>6}"]
    for (name, label), value in median.items():
        lines.append(f"{name:40} {label:>6} {value * 1000:7.1f}ms {value / base:6.2f}x {value / base_s:5.2f}x "
                     f"{minimum[name, label] * 1000:7.1f}ms {minimum[name, label] / base_min:5.2f}x "
                     f"{cpu_median[name, label] * 1000:6.1f}ms {cpu_median[name, label] / base_cpu:5.2f}x")
    lines += ["", "engine's own time (the same requests from this process):"]
    for name, values in engine.items():
        lines.append(f"  {name:38} {statistics.median(values) * 1000:7.1f}ms")
    around: dict[str, float] = {}
    for reused, name in ((True, REUSE), (False, NEW)):
        if job_seconds[reused]:
            job = statistics.median(job_seconds[reused])
            lines.append(f"  {name:38} {job * 1000:7.1f}ms the job (created -> finished); the CLI around it:")
            for variant in variants:
                around[f"{name} ({variant.label})"] = cli = median[name, variant.label] - job
                lines.append(f"  {'':38} {variant.label:>6} {cli * 1000:7.1f}ms = {cli / base:.2f}x python -c pass")
    for variant in variants:
        lines += ["", importtime(bench, variant)]
    print(f"{options.runs} rounds; {time.strftime('%Y-%m-%d %H:%M')}\n" + "\n".join(lines))
    if options.json:
        def keyed(values: dict[tuple[str, str], float]) -> dict[str, float]:
            return {f"{n} ({v})" if v else n: round(x * 1000, 2) for (n, v), x in values.items()}

        Path(options.json).write_text(json.dumps({
            "median_ms": keyed(median), "min_ms": keyed(minimum), "cpu_ms": keyed(cpu_median),
            "engine_ms": {k: round(statistics.median(v) * 1000, 2) for k, v in engine.items()},
            "cli_around_job_ms": {k: round(v * 1000, 2) for k, v in around.items()}}, indent=2))
    return 0


def importtime(bench: Bench, variant: Variant, top: int = 12) -> str:
    """The slowest imports (cumulative; top level and their direct children) of `sqlrs status`."""
    result = bench.run(bench.python, "-X", "importtime", variant.script, "status", env=variant.env)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_part, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((int(cumulative), int(self_part.split(":")[1]), depth, name.strip()))
    total = sum(r[0] for r in rows if r[2] == 0)
    shown = sorted((r for r in rows if r[2] <= 1), reverse=True)[:top]
    out = [f"python -X importtime sqlrs status ({variant.label}): {len(rows)} modules, "
           f"{total / 1000:.1f} ms cumulative (top level)", f"  {'cumulative':>10} {'self':>8}  module"]
    out += [f"  {c / 1000:8.1f}ms {s / 1000:6.1f}ms  {'  ' * d}{n}" for c, s, d, n in shown]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
