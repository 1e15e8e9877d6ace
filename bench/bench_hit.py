"""A `prepare:psql` cache hit with two versions of sqlrs, side by side in one run.

    .venv/bin/python bench/bench_hit.py --before /tmp/old [--runs 25] [--kind database|server]

`--before DIR` is the root of another checkout (e.g. `git archive REV | tar -x -C /tmp/old`).
Each version gets a fresh state dir under /tmp and its own engine, both run by this venv's
Python with PYTHONPATH set to the version's tree; the chain is built once, then the two take
turns, round robin, so load from elsewhere on the machine falls on both alike. Printed: the
median wall time of the CLI process (to the DSN on stdout) and the median engine time of the
job (its created -> finished record), and the ratios before/after.
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
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHAIN = ["--", "-c", "CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 1000) g"]


class Version:
    def __init__(self, name: str, tree: Path):
        self.name = name
        self.tree = tree
        self.state_dir = tempfile.mkdtemp(prefix=f"sqlrs-bench-hit-{name}-")
        self.wall_ms: list[float] = []

    def run(self, *args: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(self.tree), "SQLRS_STATE_DIR": self.state_dir}
        return subprocess.run([sys.executable, "-m", "sqlrs", *args], env=env, capture_output=True, text=True,
                              check=True).stdout

    def remove_instances(self) -> None:
        for instance in json.loads(self.run("ls", "-o", "json")):
            self.run("rm", "--force", instance["id"])

    def job_ms(self, last: int) -> list[float]:
        jobs = json.loads(self.run("ls", "--jobs", "-o", "json"))[-last:]
        return [(datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["created_at"])).total_seconds()
                * 1000 for j in jobs]

    def close(self) -> None:
        try:
            self.remove_instances()
            self.run("engine", "stop")
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="root of the other checkout")
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--kind", choices=["database", "server"], default="database")
    args = parser.parse_args()
    prepare = ["-q", "prepare:psql", "--runtime", "native", "--kind", args.kind, *CHAIN]
    versions = [Version("before", args.before.resolve()), Version("after", REPO)]
    try:
        for version in versions:
            version.run(*prepare)  # builds the chain and starts the engine
            version.remove_instances()
        for _ in range(args.runs):
            for version in versions:
                started = time.perf_counter()
                version.run(*prepare)
                version.wall_ms.append((time.perf_counter() - started) * 1000)
                version.remove_instances()
        medians = {}
        for version in versions:
            wall, job = statistics.median(version.wall_ms), statistics.median(version.job_ms(args.runs))
            medians[version.name] = (wall, job)
            print(f"{version.name:6}  CLI hit {wall:6.0f} ms   engine job {job:6.1f} ms   ({version.tree})")
        (wall_b, job_b), (wall_a, job_a) = medians["before"], medians["after"]
        print(f"before/after: CLI hit {wall_b / wall_a:.2f}x, engine job {job_b / job_a:.2f}x "
              f"({args.runs} runs each, --kind {args.kind}, native)")
    finally:
        for version in versions:
            version.close()


if __name__ == "__main__":
    main()
