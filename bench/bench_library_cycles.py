"""Library `instance()` cycles on one store: the kind `auto` gives against server instances (issue 26.6).

    .venv/bin/python bench/bench_library_cycles.py [--rounds 5] [--cycles 20] [--state-dir DIR]

One engine (native runtime) on a fresh state dir under /tmp (the `copy` store on ext4; give
`--state-dir` on a btrfs/reflink store to compare there), one small state. Each round runs
`--cycles` times `with client.instance(state=state, kind=KIND): SELECT 1` for KIND = `server`
(the library's default before: a warm spare when one is ready, else a full clone and a server
start) and then `auto` (the default now: what the pytest plugin takes, a database instance on
the copy store), so load from elsewhere falls on both alike. Printed: cycles per second and the
median cycle per kind, the ratio, and how many warm server spares were ready when a server cycle
began (the single refiller the server cycles wait on).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()

    import sqlrs

    own = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="sqcyc", dir="/tmp")) if own else args.state_dir
    client = sqlrs.Client(state_dir, runtime="native")
    times: dict[str, list[float]] = {"server": [], "auto": []}
    spent: dict[str, float] = {"server": 0.0, "auto": 0.0}
    phases: dict[str, list[tuple[float, float, float]]] = {"server": [], "auto": []}  # create, use, remove
    ready_at_start: list[int] = []
    try:
        state = client.build(sql=["CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g"])
        backend = client.status()["snapshot"]["backend"]
        print(f"store: {backend}; auto = {client.default_instance_kind()} instances; "
              f"{args.rounds} rounds of {args.cycles} cycles per kind", flush=True)
        for kind in ("server", "auto"):  # warm-up, untimed: the first of each kind starts servers
            with client.instance(state=state, kind=kind) as db, db.connect() as conn:
                conn.execute("SELECT 1")
        for _ in range(args.rounds):
            for kind in ("server", "auto"):
                began = time.monotonic()
                for _ in range(args.cycles):
                    if kind == "server":
                        ready_at_start.append(int(client.status()["warm"]["instances"]))
                    started = time.monotonic()
                    with client.instance(state=state, kind=kind) as db:
                        created = time.monotonic()
                        with db.connect() as conn:
                            conn.execute("SELECT 1")
                        removing = time.monotonic()
                    ended = time.monotonic()
                    times[kind].append(ended - started)
                    phases[kind].append((created - started, removing - created, ended - removing))
                spent[kind] += time.monotonic() - began
        print(f"{'kind':<8} {'cycles':>7} {'cycles/s':>9} {'median s':>9} {'p90 s':>7}   "
              "median create / use / remove s")
        rate = {}
        for kind, values in times.items():
            rate[kind] = len(values) / spent[kind]
            p90 = statistics.quantiles(values, n=10)[-1]
            split = " / ".join(f"{statistics.median(p[i] for p in phases[kind]):.3f}" for i in range(3))
            print(f"{kind:<8} {len(values):>7} {rate[kind]:>9.2f} {statistics.median(values):>9.3f} {p90:>7.3f}"
                  f"   {split}")
        print(f"auto / server: {rate['auto'] / rate['server']:.1f}x cycles per second; "
              f"warm server spares ready when a server cycle began: median {statistics.median(ready_at_start)}, "
              f"0 in {sum(1 for n in ready_at_start if n == 0)} of {len(ready_at_start)}")
    finally:
        for instance in client.instances():
            client.remove(instance)
        if own:
            subprocess.run([sys.executable, "-m", "sqlrs", "--state-dir", str(state_dir), "engine", "stop"],
                           capture_output=True, check=False)
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
