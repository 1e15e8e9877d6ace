#!/usr/bin/env python3
"""Cache-hit latency and disk use of instances on each snapshot backend.

For every backend (btrfs and reflink on loop volumes made by `sqlrs init local`, copy on a plain
directory) and every data set (pgbench-shaped tables of scale 1, 10 and 100: about 10 MB,
300 MB and 2.5 GB of state), in one run:

- build the state once (`sqlrs prepare:psql -f pgbench_sN.sql`, native runtime),
- time to DSN on a cache hit: the wall time of `sqlrs prepare:psql` against a warm engine,
  median of --repeat runs (each instance removed afterwards, untimed), and the engine's own
  clone+start time for the instance (the prepare job's `instance` task),
- for the largest data set: start --instances instances and measure what they add on disk:
  allocated bytes (FIEMAP, shared extents once) and the `df` delta of the store's filesystem.

It prints a Markdown table and the ratios the design promises: on btrfs and reflink a hit on
the 2.5 GB state within 1.5x of a hit on the 10 MB one, and 10 instances of the 2.5 GB state
adding < 5% of its size on disk. Run as root (loop volumes), e.g.:

    sudo .venv/bin/python bench/bench_snapshots.py                 # everything (~15 minutes)
    sudo .venv/bin/python bench/bench_snapshots.py --backends btrfs --scales 1,10 --repeat 5

Nothing is left behind: instances, engines, mounts, loop images and temp dirs are removed at
the end, also on failure or Ctrl+C.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlrs.adapters.snapshots import _fs, open_store  # noqa: E402
from sqlrs.entrypoints.cli.client import connect  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
LOOP_BACKENDS = {"btrfs": "btrfs", "reflink": "xfs"}
DEFAULT_SCALES = (1, 10, 100)


def pgbench_sql(scale: int) -> str:
    """The tables and rows `pgbench -i -s SCALE` makes (same columns, fill factor, keys and
    VACUUM), written as SQL: pgbench's initialization is not a psql script."""
    return f"""\
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100);
CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100);
INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, {scale}) AS b;
INSERT INTO pgbench_tellers (tid, bid, tbalance)
  SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, {10 * scale}) AS t;
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
  SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, {100000 * scale}) AS a;
ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);
VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
"""


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


@dataclass
class Hit:
    scale: int
    data_bytes: int = 0  # pg_database_size
    state_bytes: int = 0  # allocated bytes of the state's volume (the whole volume, not its increment)
    build_seconds: float = 0.0
    dsn_seconds: list[float] = field(default_factory=list)  # CLI wall time to the DSN
    clone_start_seconds: list[float] = field(default_factory=list)  # the job's instance task

    @property
    def dsn(self) -> float:
        return statistics.median(self.dsn_seconds)

    @property
    def clone_start(self) -> float:
        return statistics.median(self.clone_start_seconds)


@dataclass
class Disk:
    instances: int
    state_bytes: int
    allocated_added: int  # allocated([state, *instances]) - allocated([state])
    df_added: int  # free space before - after


@dataclass
class BackendResult:
    backend: str
    fs: str
    hits: list[Hit] = field(default_factory=list)
    disk: Disk | None = None
    error: str | None = None


class Sqlrs:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(state_dir), "SQLRS_ENGINE_IDLE_TIMEOUT": "3600"}
        for name in ("SQLRS_ENGINE_ADDR", "TAIDON_ENGINE_ADDR", "SQLRS_SNAPSHOT"):
            self.env.pop(name, None)
        self.workdir = state_dir / "work"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / ".git").mkdir(exist_ok=True)  # the workspace root

    def run(self, *args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "sqlrs", *args], capture_output=True, text=True,
                                env=self.env, cwd=self.workdir, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"sqlrs {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def api(self, method: str, path: str) -> Any:
        return connect(self.state_dir, spawn=False).call(method, path)

    def prepare(self, script: str) -> tuple[str, float]:
        started = time.perf_counter()
        result = self.run("-q", "prepare:psql", "--runtime", "native", "--", "-f", script)
        return result.stdout.strip(), time.perf_counter() - started

    def instances(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.run("ls", "--instances", "-o", "json").stdout)
        return data

    def instance_seconds(self, dsn: str) -> float:
        instance = next(i for i in self.instances() if i["dsn"] == dsn)
        job = self.api("GET", f"/v1/prepare-jobs/{instance['job_id']}")
        task = next(t for t in job["tasks"] if t["kind"] == "instance")
        return float(task["seconds"])

    def remove(self, dsn: str | None = None) -> None:
        for instance in self.instances():
            if dsn is None or instance["dsn"] == dsn:
                self.run("rm", instance["id"])

    def close(self) -> None:
        if (self.state_dir / "engine.json").exists():
            with contextlib.suppress(Exception):
                self.remove()
            self.run("engine", "stop", check=False)


def psql_value(dsn: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-At", "-d", dsn, "-c", sql], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def backend_state_dir(backend: str, store_size: str) -> Iterator[Sqlrs]:
    state_dir = Path(tempfile.mkdtemp(prefix="sqb", dir="/tmp"))
    sq = Sqlrs(state_dir)
    try:
        if backend in LOOP_BACKENDS:
            sq.run("init", "local", "--snapshot", backend, "--store-size", store_size)
        else:
            sq.run("init", "local", "--snapshot", "copy")
        sq.run("config", "set", "cache.capacity.max_bytes", "0")
        yield sq
    finally:
        sq.close()
        for point in sorted(_fs.mounts_below(state_dir), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                time.sleep(1)
                subprocess.run(["umount", "-l", point], capture_output=True)
        (state_dir / "store.img").unlink(missing_ok=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def settle(root: Path, backend: str) -> None:
    open_store(root, backend).settle()


def bench_backend(backend: str, scales: list[int], repeat: int, instances: int, store_size: str,
                  say: Any) -> BackendResult:
    with backend_state_dir(backend, store_size) as sq:
        store_root = sq.state_dir / "store"
        result = BackendResult(backend, _fs.fs_name(store_root))
        store = open_store(store_root, backend)
        say(f"{backend}: store on {result.fs} at {store_root}")
        largest_script = ""
        for scale in scales:
            script = f"pgbench_s{scale}.sql"
            (sq.workdir / script).write_text(pgbench_sql(scale))
            hit = Hit(scale)
            say(f"{backend}: building scale {scale} ...")
            started = time.perf_counter()
            dsn, _ = sq.prepare(script)
            hit.build_seconds = time.perf_counter() - started
            hit.data_bytes = int(psql_value(dsn, "SELECT pg_database_size('postgres')"))
            state_id = next(i for i in sq.instances() if i["dsn"] == dsn)["state_id"]
            hit.state_bytes = store.allocated_bytes([store_root / "states" / state_id])
            sq.remove(dsn)
            say(f"{backend}: scale {scale}: data {human(hit.data_bytes)}, state {human(hit.state_bytes)}, "
                f"built in {hit.build_seconds:.1f}s")
            dsn, _ = sq.prepare(script)  # warm-up hit: engine, page cache, runtime probe
            sq.remove(dsn)
            for _ in range(repeat):
                dsn, seconds = sq.prepare(script)
                hit.dsn_seconds.append(seconds)
                hit.clone_start_seconds.append(sq.instance_seconds(dsn))
                sq.remove(dsn)
            say(f"{backend}: scale {scale}: hit {hit.dsn * 1000:.0f} ms to DSN, clone+start "
                f"{hit.clone_start * 1000:.0f} ms (median of {repeat})")
            result.hits.append(hit)
            largest_script = script
        if instances and largest_script:
            largest = result.hits[-1]
            need = largest.state_bytes * instances * 1.1 + 4 * GiB
            count = instances
            if backend == "copy" and store.free_bytes() < need:
                count = max(1, int((store.free_bytes() - 4 * GiB) / (largest.state_bytes * 1.1)))
                say(f"{backend}: only room for {count} full copies of the largest state")
            settle(store_root, backend)
            before = store.free_bytes()
            dsns = []
            for _ in range(count):
                dsns.append(sq.prepare(largest_script)[0])
            settle(store_root, backend)
            after = store.free_bytes()
            listed = [i for i in sq.instances() if i["dsn"] in dsns]
            state_path = store_root / "states" / listed[0]["state_id"]
            paths = [store_root / "instances" / i["id"] for i in listed]
            alone = store.allocated_bytes([state_path])
            together = store.allocated_bytes([state_path, *paths])
            result.disk = Disk(count, alone, together - alone, before - after)
            say(f"{backend}: {count} instances of scale {largest.scale} add {human(together - alone)} allocated, "
                f"{human(before - after)} by df")
            sq.remove()
        return result


def report(results: list[BackendResult]) -> tuple[str, bool]:
    lines = ["| backend (fs) | data set | state on disk | build | hit: DSN (CLI wall) | hit: clone+start (engine) |",
             "|---|---|---|---|---|---|"]
    for result in results:
        if result.error:
            lines.append(f"| {result.backend} | failed: {result.error} | | | | |")
            continue
        for hit in result.hits:
            lines.append(f"| {result.backend} ({result.fs}) | pgbench scale {hit.scale}: {human(hit.data_bytes)} | "
                         f"{human(hit.state_bytes)} | {hit.build_seconds:.1f} s | {hit.dsn * 1000:.0f} ms | "
                         f"{hit.clone_start * 1000:.0f} ms |")
    lines += ["", "| backend | largest / smallest: DSN | largest / smallest: clone+start | "
                  "instances of the largest | added on disk (allocated) | added (df) | added / state size |",
              "|---|---|---|---|---|---|---|"]
    ok = True
    verdicts = []
    for result in results:
        if result.error or not result.hits:
            continue
        small, large = result.hits[0], result.hits[-1]
        dsn_ratio, clone_ratio = large.dsn / small.dsn, large.clone_start / small.clone_start
        disk = result.disk
        share = disk.allocated_added / disk.state_bytes if disk else float("nan")
        df_share = disk.df_added / disk.state_bytes if disk else float("nan")
        lines.append(f"| {result.backend} | {dsn_ratio:.2f}x | {clone_ratio:.2f}x | "
                     f"{disk.instances if disk else '-'} | "
                     f"{human(disk.allocated_added) if disk else '-'} | {human(disk.df_added) if disk else '-'} | "
                     f"{share:.1%} allocated, {df_share:.1%} df |")
        if result.backend in LOOP_BACKENDS and len(result.hits) > 1:
            hit_ok = dsn_ratio <= 1.5 and clone_ratio <= 1.5
            disk_ok = disk is not None and disk.instances >= 10 and max(share, df_share) < 0.05
            ok = ok and hit_ok and disk_ok
            verdicts.append(f"- {result.backend}: hit on {human(large.state_bytes)} vs {human(small.state_bytes)}: "
                            f"{dsn_ratio:.2f}x to DSN, {clone_ratio:.2f}x clone+start (<= 1.5x: "
                            f"{'PASS' if hit_ok else 'FAIL'}); {disk.instances if disk else 0} instances add "
                            f"{max(share, df_share):.2%} of the state (< 5%: {'PASS' if disk_ok else 'FAIL'})")
    copy = next((r for r in results if r.backend == "copy" and r.hits and not r.error), None)
    for result in results:
        if copy is not None and result is not copy and result.hits and not result.error:
            verdicts.append(f"- {result.backend} vs copy, hit on the largest state: "
                            f"{copy.hits[-1].dsn / result.hits[-1].dsn:.1f}x faster to DSN")
    return "\n".join([*lines, "", *verdicts]), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="btrfs,reflink,copy")
    parser.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)),
                        help="pgbench scales, smallest first (default 1,10,100)")
    parser.add_argument("--repeat", type=int, default=7, help="cache hits timed per data set (median)")
    parser.add_argument("--instances", type=int, default=10, help="instances of the largest state for disk use")
    parser.add_argument("--store-size", default="16G", help="loop volume size (sparse)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    # measure the CLI as installed, with bytecode, even where PYTHONDONTWRITEBYTECODE is set
    compileall.compile_dir(str(REPO / "sqlrs"), quiet=1)
    if os.geteuid() != 0:
        print("bench_snapshots: needs root (loop volumes for btrfs and reflink)", file=sys.stderr)
        return 2
    scales = sorted(int(s) for s in args.scales.split(","))

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    results = []
    for backend in args.backends.split(","):
        try:
            results.append(bench_backend(backend, scales, args.repeat, args.instances, args.store_size, say))
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            say(f"{backend}: failed: {exc}")
            results.append(BackendResult(backend, "?", error=str(exc).splitlines()[0][:200]))
    table, ok = report(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ | {"hits": [h.__dict__ for h in r.hits],
                                                       "disk": r.disk.__dict__ if r.disk else None}
                                         for r in results], indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
