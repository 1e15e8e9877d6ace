"""Issue 25 measured: `compare`, `bisect:psql` and `check:alembic --downgrades` on real histories.

    .venv/bin/python bench/bench_questions.py [--backend btrfs|reflink|copy] [--runs 5] [--json FILE]

Run as root for btrfs/reflink (the store goes on a loop volume made by `sqlrs init local`). Needs
Debian's PostgreSQL 15 (/usr/lib/postgresql/15, with contrib) for the native runtime and the
baselines (SQLRS_BENCH_PG_BIN), and pg_dump on PATH.

- History: the first 247 diesel migrations of LemmyNet/lemmy (AGPL: not in this repository). They
  are staged from /work/histories/lemmy, or from the bare mirror of LemmyNet/lemmy (SQLRS_LEMMY_MIRROR,
  default /work/.mirror/LemmyNet+lemmy/repo) at LEMMY_COMMIT, or from --lemmy DIR.
- bisect: a check that fails once table `person` exists (migration 076 renames `user_` to it).
  Timed: bisect on a cold cache (it builds what its probes need), bisect on the cached chain, and
  the baseline a user has without sqlrs — one plain server, each migration applied with psql and
  the check run after it, until the check fails (a linear replay).
- compare: three consecutive pairs of the history printed (for checking against the files), and
  the median time of comparing consecutive states over a sample of the history.
- Sakila (/work/shared/datasets, SQLRS_DATASETS): two states of the same files built by different
  chains (autocommit vs -1) compared, median of --runs; baseline: `pg_dump --schema-only` and
  `pg_dump --data-only` of both databases and a diff of the dumps (instances already running).
- check:alembic --downgrades on examples/alembic-shop: time on a cold and on a warm cache.

Every ratio is against a baseline measured in the same run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import DATASETS, PG_BIN, REPO, SharedServer, Sqlrs, run, timed

LEMMY_COMMIT = "439734dd638a2c06a2f907beab7dcf4646e88f86"
LEMMY_STEPS = 247
LEMMY_MIRROR = Path(os.environ.get("SQLRS_LEMMY_MIRROR", "/work/.mirror/LemmyNet+lemmy/repo"))
LEMMY_STAGED = Path("/work/histories/lemmy")
CHECK_SQL = ("-- the old code's assumption: there is no table person (076 renames user_ to person)\n"
             "SELECT 1 / (count(*) = 0)::int FROM pg_tables WHERE schemaname = 'public' AND tablename = 'person';\n")
BREAKS_AT = 76
SHOWN_PAIRS = (1, 95, 99)  # compare N vs N+1 for these N: 002 create_user, 096 required key, 100 published column


def stage_lemmy(target: Path, given: Path | None) -> list[Path]:
    """The history's up.sql files as NNN_name.sql in `target`, in directory-name order."""
    target.mkdir(parents=True)
    source = given or (LEMMY_STAGED if LEMMY_STAGED.is_dir() else None)
    if source is not None:
        for path in sorted(source.glob("*.sql"))[:LEMMY_STEPS]:
            shutil.copy(path, target / path.name)
    else:
        git = ["git", f"--git-dir={LEMMY_MIRROR}"]
        names = run([*git, "ls-tree", "--name-only", f"{LEMMY_COMMIT}:migrations"]).split()
        for index, name in enumerate(sorted(names)[:LEMMY_STEPS], 1):
            text = run([*git, "show", f"{LEMMY_COMMIT}:migrations/{name}/up.sql"])
            (target / f"{index:03}_{name}.sql").write_text(text)
    return sorted(target.glob("*.sql"))


def cli(sq: Sqlrs, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI, whatever its exit code (compare exits 1 when different)."""
    return subprocess.run([sys.executable, "-m", "sqlrs", "-q", *args], cwd=cwd, env=sq.env, capture_output=True,
                          text=True, check=False)


def median_of(runs: int, fn: Any) -> tuple[float, Any]:
    seconds, value = [], None
    for _ in range(runs):
        elapsed, value = timed(fn)
        seconds.append(elapsed)
    return statistics.median(seconds), value


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}

    def add(self, what: str, seconds: float, baseline: str | None = None, baseline_s: float | None = None,
            note: str = "") -> None:
        ratio = round(baseline_s / seconds, 2) if baseline_s else None
        self.rows.append({"what": what, "seconds": round(seconds, 3), "baseline": baseline,
                          "baseline_s": round(baseline_s, 3) if baseline_s else None, "speedup": ratio, "note": note})
        print(f"  {what}: {seconds:.3f}s" + (f" (baseline {baseline}: {baseline_s:.3f}s, x{ratio})" if ratio else ""),
              file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| what | median s | baseline | baseline s | speedup | note |", "|---|---|---|---|---|---|"]
        for row in self.rows:
            lines.append(f"| {row['what']} | {row['seconds']} | {row['baseline'] or ''} | {row['baseline_s'] or ''} "
                         f"| {('x' + str(row['speedup'])) if row['speedup'] else ''} | {row['note']} |")
        return "\n".join(lines)


# -- the history: bisect, compare ---------------------------------------------------------------------
def linear_replay(work: Path, files: list[Path], check: Path) -> tuple[float, int]:
    """Without sqlrs: a fresh server, each migration applied and the check run after it, until it fails."""
    server = SharedServer(work / "linear")
    started = time.perf_counter()
    server.start()
    try:
        dsn = server.dsn("postgres")
        for index, path in enumerate(files, 1):
            run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(path)])
            checked = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(check)],
                                     capture_output=True, text=True, check=False)
            if checked.returncode != 0:
                return time.perf_counter() - started, index
        return time.perf_counter() - started, len(files) + 1
    finally:
        server.stop()


def history(args: argparse.Namespace, work: Path, report: Report) -> None:
    lemmy = work / "lemmy"
    files = stage_lemmy(lemmy, args.lemmy)
    psql_args = [arg for path in files for arg in ("-f", path.name)]
    check = lemmy / "check.sql"
    check.write_text(CHECK_SQL)
    steps = len(files)
    bound = math.ceil(math.log2(steps)) + 2
    print(f"history: {steps} migrations of LemmyNet/lemmy; check fails from step {BREAKS_AT}", file=sys.stderr)

    sq = Sqlrs(work / "sq-history", "native", args.backend)
    sq.setup()
    try:
        bisect = [sys.executable, "-m", "sqlrs", "-q", "bisect:psql", "--check", "check.sql", *sq.flags(),
                  "-o", "json", "--", *psql_args]
        cold_s, cold = timed(lambda: json.loads(run(bisect, cwd=lemmy, env=sq.env)))
        assert cold["first_bad"]["index"] == BREAKS_AT, cold
        plan_rows = json.loads(run([sys.executable, "-m", "sqlrs", "-q", "plan:psql", *sq.flags(), "-o", "json", "--",
                                    *psql_args], cwd=lemmy, env=sq.env))
        cached_after_cold = sum(1 for row in plan_rows if row["cached"])
        build_s, _ = timed(lambda: sq.cli("prepare:psql", *sq.flags(), "--", *psql_args, cwd=lemmy))
        sq.rm_all_instances()
        warm_s, warm = median_of(args.runs, lambda: json.loads(run(bisect, cwd=lemmy, env=sq.env)))
        assert warm["first_bad"]["index"] == BREAKS_AT and warm["tested"] <= bound, warm
        linear_s, linear_at = linear_replay(work, files, check)
        assert linear_at == BREAKS_AT, linear_at
        report.facts["bisect"] = {"steps": steps, "first_bad": cold["first_bad"], "tested": warm["tested"],
                                  "bound": bound, "probes": warm["probes"],
                                  "states_cached_after_cold_bisect": cached_after_cold}
        report.add(f"bisect:psql, {steps} steps, cached chain (tested {warm['tested']} <= {bound})", warm_s,
                   f"linear replay to step {BREAKS_AT}, check after each", linear_s)
        report.add("bisect:psql, cold cache (builds what its probes need)", cold_s,
                   f"linear replay to step {BREAKS_AT}", linear_s,
                   note=f"{cached_after_cold} of {steps + 1} states built")
        report.add(f"prepare:psql of the other {steps + 1 - cached_after_cold} states (after the cold bisect)",
                   build_s)

        ids = [row["state_id"] for row in plan_rows]
        import sqlrs

        client = sqlrs.Client(sq.state_dir, runtime="native", base_dir=lemmy)

        def keep(n: int) -> None:  # a state of its own for step n (a build keeps its last step, SPEC 5)
            if n and not plan_rows[n].get("checkpoint", True):
                client.build(psql_args=psql_args[:2 * n])

        shown = {}
        for n in SHOWN_PAIRS:
            keep(n)
            keep(n + 1)
            result = cli(sq, "compare", ids[n], ids[n + 1], "-o", "json")
            data = json.loads(result.stdout)
            shown[f"{n} -> {n + 1} ({files[n].name})"] = {"schema": data["schema"], "data_changed": [
                t for t in data["tables"] if t["data_changed"]], "sequences": data["sequences"]}
            print(f"\ncompare state {n} vs {n + 1} ({files[n].name}):", file=sys.stderr)
            print(cli(sq, "compare", ids[n], ids[n + 1]).stdout, file=sys.stderr)
        report.facts["compare_pairs"] = shown
        sample = list(range(0, steps, max(1, steps // args.pairs)))[:args.pairs]
        seconds, engine = [], []
        differing = 0
        for n in sample:
            keep(n)
            keep(n + 1)
            elapsed, result = timed(functools.partial(cli, sq, "compare", ids[n], ids[n + 1], "-o", "json"))
            seconds.append(elapsed)
            data = json.loads(result.stdout)
            engine.append(data["seconds"])
            differing += not data["equal"]
        report.facts["compare_history"] = {"pairs": len(sample), "differing": differing}
        report.add(f"compare N vs N+1 on the history ({len(sample)} pairs, CLI; engine median "
                   f"{statistics.median(engine):.3f}s)", statistics.median(seconds))
    finally:
        sq.close()


# -- Sakila: two states of one data set -----------------------------------------------------------------
def sakila(args: argparse.Namespace, work: Path, report: Report) -> None:
    folder = DATASETS / "sakila"
    files = ["-f", "1-postgres-sakila-schema.sql", "-f", "2-postgres-sakila-insert-data-using-copy.sql"]
    if not (folder / files[1]).exists():
        print(f"sakila: {folder} not found, skipped", file=sys.stderr)
        return
    sq = Sqlrs(work / "sq-sakila", "native", args.backend)
    sq.setup()
    try:
        a = sq.cli("prepare:psql", *sq.flags(), "--", *files, cwd=folder).strip()
        b = sq.cli("prepare:psql", *sq.flags(), "--", "-1", *files, cwd=folder).strip()
        state_a = json.loads(sq.cli("plan:psql", *sq.flags(), "-o", "json", "--", *files, cwd=folder))[-1]["state_id"]
        state_b = json.loads(sq.cli("plan:psql", *sq.flags(), "-o", "json", "--", "-1", *files,
                                    cwd=folder))[-1]["state_id"]
        assert state_a != state_b
        first = json.loads(cli(sq, "compare", state_a, state_b, "-o", "json").stdout)
        assert first["equal"], first
        rows = sum(t["rows_a"] or 0 for t in first["tables"])
        report.facts["sakila"] = {"tables": len(first["tables"]), "rows": rows, "equal": first["equal"]}
        compare_s, result = median_of(args.runs, lambda: json.loads(cli(sq, "compare", state_a, state_b,
                                                                        "-o", "json").stdout))
        engine_s = result["seconds"]
        rows_s, _ = median_of(args.runs, lambda: cli(sq, "compare", state_a, state_b, "--data", "rows"))
        schema_s, _ = median_of(args.runs, lambda: cli(sq, "compare", state_a, state_b, "--data", "none"))

        def dumps() -> bool:
            # (recent pg_dump writes a random \restrict key into every dump: not a difference)
            texts = ["\n".join(line for line in run(["pg_dump", "--no-owner", kind, "-d", dsn]).splitlines()
                               if not line.startswith(("\\restrict", "\\unrestrict")))
                     for dsn in (a, b) for kind in ("--schema-only", "--data-only")]
            return texts[0] == texts[2] and texts[1] == texts[3]

        dump_s, same = median_of(args.runs, dumps)
        report.facts["sakila"]["pg_dump_equal"] = same
        report.add(f"compare two Sakila states ({len(first['tables'])} tables, {rows} rows; engine {engine_s:.3f}s)",
                   compare_s, "pg_dump schema+data of two running instances, diffed", dump_s)
        report.add("compare two Sakila states, --data rows", rows_s, "pg_dump diff", dump_s)
        report.add("compare two Sakila states, --data none", schema_s, "pg_dump diff", dump_s)
        # a changed row: found as data_changed
        instance = next(i["id"] for i in json.loads(sq.cli("ls", "--instances", "-o", "json")) if i["dsn"] == a)
        run(["psql", "-X", "-q", "-d", a, "-c", "UPDATE film SET title = title || '!' WHERE film_id = 7"])
        changed = json.loads(cli(sq, "compare", state_a, instance, "-o", "json").stdout)
        report.facts["sakila"]["after_update"] = [t for t in changed["tables"] if t["data_changed"]]
    finally:
        sq.close()


# -- check:alembic on the example ---------------------------------------------------------------------
def alembic(args: argparse.Namespace, work: Path, report: Report) -> None:
    project = work / "shop"
    shutil.copytree(REPO / "examples" / "alembic-shop", project, ignore=shutil.ignore_patterns("__pycache__"))
    sq = Sqlrs(work / "sq-shop", "native", args.backend)
    sq.setup()
    try:
        check = [sys.executable, "-m", "sqlrs", "-q", "check:alembic", "--downgrades", *sq.flags(), "-o", "json"]
        cold_s, cold = timed(lambda: json.loads(run(check, cwd=project, env=sq.env)))
        assert cold["restores"], cold
        warm_s, _ = median_of(max(1, args.runs // 2), lambda: run(check, cwd=project, env=sq.env))
        revisions = len(cold["revisions"])
        report.add(f"check:alembic --downgrades, alembic-shop ({revisions} revisions), cold cache", cold_s)
        report.add("check:alembic --downgrades, alembic-shop, cached states", warm_s,
                   note=f"{warm_s / revisions:.2f}s a revision")
    finally:
        sq.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="btrfs", choices=["btrfs", "reflink", "copy"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=25, help="consecutive pairs of the history compared")
    parser.add_argument("--lemmy", type=Path, default=None, help="a directory of the history's NNN_*.sql")
    parser.add_argument("--only", default="history,sakila,alembic")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (PG_BIN / "postgres").exists():
        sys.exit(f"PostgreSQL binaries not found in {PG_BIN} (SQLRS_BENCH_PG_BIN)")
    work = Path(tempfile.mkdtemp(prefix="sqbq", dir="/tmp"))
    os.chmod(work, 0o755)
    report = Report()
    try:
        for part in args.only.split(","):
            {"history": history, "sakila": sakila, "alembic": alembic}[part](args, work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report.markdown())
    print(json.dumps(report.facts, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"rows": report.rows, "facts": report.facts}, indent=2))


if __name__ == "__main__":
    main()
