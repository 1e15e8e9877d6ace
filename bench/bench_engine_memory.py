"""The engine's memory over many library instance cycles (issue 26.5).

    .venv/bin/python bench/bench_engine_memory.py [--cycles 1000] [--kind server|database]
                                                  [--tracemalloc] [--every 100] [--warm true|false]

A fresh state dir under /tmp, the native runtime, one small state; then `--cycles` times
`with client.instance(state=state, kind=KIND): pass` (create, remove). The engine is started by
this script (the same code the CLI spawns) so that it can trace its own allocations: with
`--tracemalloc` it runs under tracemalloc and writes a snapshot on SIGUSR2; the script compares
the snapshot after the first `--every` cycles (warm-up: caches, pools, lazy imports) with the
last one, and prints where the memory that stayed went (top lines by size, and by count).

Printed every `--every` cycles: the engine's RSS (VmRSS), Python's live heap as tracemalloc
sees it (with `--tracemalloc`), and the growth per cycle since the warm-up sample. Nothing is
left behind: instances, the engine and the state dir are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# the engine, as `python -m sqlrs.entrypoints.engine` runs it, with tracemalloc on and a snapshot
# written on SIGUSR2 (to the path in SQLRS_BENCH_SNAPSHOT, numbered)
ENGINE = """
import os, signal, sys, tracemalloc
tracing = os.environ.get("SQLRS_BENCH_TRACE") == "1"
if tracing:
    tracemalloc.start(8)
count = [0]
def dump(signum, frame):
    import gc
    gc.collect()
    count[0] += 1
    path = os.environ["SQLRS_BENCH_SNAPSHOT"] + f".{count[0]}"
    if tracing:
        tracemalloc.take_snapshot().dump(path + ".tmp")
    else:
        open(path + ".tmp", "w").close()
    os.rename(path + ".tmp", path)
signal.signal(signal.SIGUSR2, dump)
from sqlrs.entrypoints.engine.server import main
sys.exit(main(["--state-dir", sys.argv[1]]))
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def snapshot(pid: int, base: Path, number: int, timeout: float = 300) -> Path:
    os.kill(pid, signal.SIGUSR2)
    path = Path(f"{base}.{number}")
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the engine wrote no snapshot")
        time.sleep(0.05)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--kind", choices=["server", "database"], default="server")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--warm", choices=["true", "false"], default="true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import sqlrs

    state_dir = Path(tempfile.mkdtemp(prefix="sqmem", dir="/tmp"))
    snap_base = state_dir / "snap"
    env = {**os.environ, "SQLRS_BENCH_TRACE": "1" if args.tracemalloc else "0",
           "SQLRS_BENCH_SNAPSHOT": str(snap_base), "SQLRS_WARM": args.warm, "SQLRS_ENGINE_IDLE_TIMEOUT": "3600",
           "PYTHONPATH": str(REPO)}
    log = open(state_dir / "engine.log", "ab")  # noqa: SIM115 - the engine's
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, str(state_dir)], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=log, env=env, start_new_session=True, cwd="/")
    client = sqlrs.Client(state_dir, runtime="native", spawn=False)
    try:
        deadline = time.monotonic() + 600  # tracing makes the start slow on a busy machine
        while not (state_dir / "engine.json").exists():
            if engine.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the engine did not start: see {state_dir / 'engine.log'}")
            time.sleep(0.05)
        pid = int(json.loads((state_dir / "engine.json").read_text())["pid"])
        assert pid == engine.pid
        state = client.build(sql=["CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g"])
        print(f"engine pid {pid}, kind {args.kind}, warm {args.warm}, tracemalloc {args.tracemalloc}, "
              f"{args.cycles} cycles", flush=True)
        print(f"{'cycles':>7} {'s/cycle':>8} {'RSS KiB':>9} {'heap KiB':>9} {'RSS B/cycle':>12} "
              f"{'heap B/cycle':>13}", flush=True)
        samples: list[tuple[int, int, int]] = []  # (cycle, rss, heap)
        snapshots: list[Path] = []
        started = time.monotonic()
        for cycle in range(1, args.cycles + 1):
            with client.instance(state=state, kind=args.kind):
                pass
            if cycle % args.every == 0 or cycle == args.cycles:
                per_cycle = (time.monotonic() - started) / args.every
                path = snapshot(pid, snap_base, len(snapshots) + 1)
                snapshots.append(path)
                heap = 0
                if args.tracemalloc:
                    heap = sum(stat.size for stat in tracemalloc.Snapshot.load(str(path)).statistics("filename"))
                rss = rss_kib(pid)
                samples.append((cycle, rss, heap))
                first = samples[0]
                span = cycle - first[0]
                rss_rate = (rss - first[1]) * 1024 / span if span else 0
                heap_rate = (heap - first[2]) / span if span else 0
                print(f"{cycle:>7} {per_cycle:>8.3f} {rss:>9} {heap // 1024:>9} {rss_rate:>12.0f} "
                      f"{heap_rate:>13.0f}", flush=True)
                if len(snapshots) > 2:
                    snapshots[-2].unlink()  # keep the warm-up one and the last
                started = time.monotonic()
        if args.tracemalloc and len(snapshots) >= 2:
            first_snap = tracemalloc.Snapshot.load(str(snapshots[0]))
            last_snap = tracemalloc.Snapshot.load(str(snapshots[-1]))
            span = samples[-1][0] - samples[0][0]
            diff = last_snap.compare_to(first_snap, "traceback")
            print(f"\nwhere the heap grew between cycle {samples[0][0]} and {samples[-1][0]} (top by size):")
            for stat in sorted(diff, key=lambda s: -s.size_diff)[:args.top]:
                if stat.size_diff <= 0:
                    break
                frames = [f"{frame.filename.replace(str(REPO) + '/', '')}:{frame.lineno}"  # innermost first
                          for frame in reversed(stat.traceback) if "sqlrs" in frame.filename][:4]
                where = " <- ".join(frames) or f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}"
                print(f"  {stat.size_diff / span:>8.1f} B/cycle {stat.count_diff:>+7} blocks  {where}")
    finally:
        if (state_dir / "engine.json").exists():
            for instance in client.instances():
                client.remove(instance)
        stop = [sys.executable, "-m", "sqlrs", "engine", "stop"]  # warm instances go with it
        subprocess.run(stop, env={**env, "SQLRS_STATE_DIR": str(state_dir)}, capture_output=True, check=False)
        try:
            engine.wait(60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        log.close()
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
