"""How long the CLI's hot commands take, as ratios against `python -c pass` measured in the same run.

    .venv/bin/python bench/bench_cli.py                   # 30 rounds, fast path as installed
    .venv/bin/python bench/bench_cli.py --runs 50 --no-fast   # force the Click path (SQLRS_CLI_NO_FAST=1)
    .venv/bin/python bench/bench_cli.py --json out.json

A fresh state dir under /tmp, the native runtime, one warm engine. Every command runs `--runs`
times, the commands taking turns (round robin), so load from elsewhere on the machine spreads
over all of them alike; each figure is a median. Commands run through the installed console
script (`<venv>/bin/sqlrs`), the way users and scripts start them.

Besides the process times it prints the engine's own time: for `status`, `ls` and `rm` the
median of the same HTTP requests made from this process (what the engine adds to a command),
for a `prepare:psql` hit the job's created -> finished time from its record. Last, the top
entries of `python -X importtime` for `sqlrs status`.
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


def iso_seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


class Bench:
    def __init__(self, python: str, no_fast: bool):
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
        if no_fast:
            self.env["SQLRS_CLI_NO_FAST"] = "1"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, cwd=self.work,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-fast", action="store_true", help="force the Click path (SQLRS_CLI_NO_FAST=1)")
    parser.add_argument("--json", help="also write the figures here")
    options = parser.parse_args()
    # an editable install leaves sqlrs uncompiled; with PYTHONDONTWRITEBYTECODE every start would compile
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "sqlrs")], check=True)

    bench = Bench(sys.executable, options.no_fast)
    try:
        return measure(bench, options)
    finally:
        bench.close()


def measure(bench: Bench, options: argparse.Namespace) -> int:
    py = bench.python
    bench.sq("engine", "start")
    bench.sq("config", "set", "container.runtime", "native")
    bench.sq("-q", "prepare:psql", "--name", "bench", "--", "-f", "schema.sql")  # builds the chain once
    hit_dsns: list[str] = []
    sq = bench.sqlrs
    commands: dict[str, list[str]] = {
        "python -c pass": [py, "-c", "pass"],
        "python -S -c pass": [py, "-S", "-c", "pass"],
        "sqlrs --help": [sq, "--help"],
        "sqlrs status": [sq, "status"],
        "sqlrs ls": [sq, "ls"],
        f"sqlrs rm {MISSING_ID}": [sq, "rm", MISSING_ID],
        "sqlrs run:psql -c 'select 1'": [sq, "run:psql", "--instance", "bench", "--", "-c", "select 1"],
        "sqlrs prepare:psql --name --reuse (hit)": [sq, "-q", "prepare:psql", "--name", "bench", "--reuse", "--",
                                                    "-f", "schema.sql"],
        "sqlrs prepare:psql (hit, new instance)": [sq, "-q", "prepare:psql", "--", "-f", "schema.sql"],
    }
    engine_requests: dict[str, list[tuple[str, str]]] = {
        "status": [("GET", "/v1/status")],
        "ls": [("GET", "/v1/instances")],
        "rm": [("GET", f"/v1/instances/{MISSING_ID}"), ("GET", f"/v1/states/{MISSING_ID}")],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    engine: dict[str, list[float]] = {name: [] for name in engine_requests}
    for round_ in range(options.runs + 1):  # round 0 warms up: page cache, engine caches
        for name, argv in commands.items():
            wall, used, code, out = spawn(argv, bench.env, bench.work)
            if code != 0:
                raise RuntimeError(f"{name} failed with exit code {code}")
            if round_:
                times[name].append(wall)
                cpu[name].append(used)
            if "new instance" in name:
                hit_dsns.append(out.strip())
        for name, requests in engine_requests.items():
            started = time.perf_counter()
            for method, path in requests:
                bench.api(method, path)
            if round_:
                engine[name].append(time.perf_counter() - started)
        for dsn in hit_dsns:  # untimed: remove what the timed hits started
            instance = next(i for i in json.loads(bench.sq("ls", "-o", "json").stdout) if i["dsn"] == dsn)
            bench.sq("rm", instance["id"])
        hit_dsns.clear()
    # the engine's own time for a hit: the job's record, created -> finished
    jobs = [j for j in bench.api("GET", "/v1/prepare-jobs") if j["status"] == "succeeded"]
    job_seconds: dict[bool, list[float]] = {True: [], False: []}
    for job in jobs[-options.runs * 2:]:
        result = job.get("result") or {}
        job_seconds[bool(result.get("reused"))].append(iso_seconds(job["finished_at"]) - iso_seconds(job["created_at"]))

    medians = {name: statistics.median(values) for name, values in times.items()}
    minimums = {name: min(values) for name, values in times.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    base, base_s = medians["python -c pass"], medians["python -S -c pass"]
    lines = [f"{'command (wall: median, ratio; min, ratio; CPU of the process: median, ratio)':44}",
             f"{'':44} {'median':>9} {'x pass':>7} {'x -S':>6} {'min':>9} {'x pass':>7} {'CPU':>9} {'x pass':>7}"]
    for name, value in medians.items():
        lines.append(f"{name:44} {value * 1000:7.1f}ms {value / base:6.2f}x {value / base_s:5.2f}x "
                     f"{minimums[name] * 1000:7.1f}ms {minimums[name] / minimums['python -c pass']:6.2f}x "
                     f"{cpu_medians[name] * 1000:7.1f}ms {cpu_medians[name] / cpu_medians['python -c pass']:6.2f}x")
    lines.append("")
    lines.append("engine's own time (the same requests from this process):")
    for name, values in engine.items():
        lines.append(f"  {name:42} {statistics.median(values) * 1000:7.1f}ms")
    overhead: dict[str, float] = {}
    for reused, label in ((True, "sqlrs prepare:psql --name --reuse (hit)"),
                          (False, "sqlrs prepare:psql (hit, new instance)")):
        if job_seconds[reused]:
            job = statistics.median(job_seconds[reused])
            overhead[label] = medians[label] - job
            lines.append(f"  {label:42} {job * 1000:7.1f}ms job (created -> finished); the CLI around it: "
                         f"{overhead[label] * 1000:.1f}ms = {overhead[label] / base:.2f}x python -c pass")
    lines.append("")
    lines.append(importtime(bench))
    text = "\n".join(lines)
    print(f"{'SQLRS_CLI_NO_FAST=1 (Click path)' if options.no_fast else 'as installed'}; "
          f"{options.runs} rounds; {time.strftime('%Y-%m-%d %H:%M')}\n{text}")
    if options.json:
        Path(options.json).write_text(json.dumps({"medians_ms": {k: v * 1000 for k, v in medians.items()},
                                                  "min_ms": {k: v * 1000 for k, v in minimums.items()},
                                                  "cpu_ms": {k: v * 1000 for k, v in cpu_medians.items()},
                                                  "engine_ms": {k: statistics.median(v) * 1000
                                                                for k, v in engine.items()},
                                                  "cli_around_job_ms": {k: v * 1000 for k, v in overhead.items()}},
                                                 indent=2))
    return 0


def importtime(bench: Bench, top: int = 12) -> str:
    """The slowest imports (cumulative, top-level and their direct children) of `sqlrs status`."""
    result = bench.run(bench.python, "-X", "importtime", bench.sqlrs, "status")
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_part, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((int(cumulative), int(self_part.split(":")[1]), depth, name.strip()))
    total = sum(r[0] for r in rows if r[2] == 0)
    shown = sorted((r for r in rows if r[2] <= 1), reverse=True)[:top]
    out = [f"python -X importtime sqlrs status: {len(rows)} modules, {total / 1000:.1f} ms cumulative (top level)",
           f"  {'cumulative':>10} {'self':>8}  module"]
    out += [f"  {c / 1000:8.1f}ms {s / 1000:6.1f}ms  {'  ' * d}{n}" for c, s, d, n in shown]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
