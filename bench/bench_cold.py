#!/usr/bin/env python3
"""Cold builds and rebuilds after an edit, against a plain replay of the same migrations, per store.

For each snapshot store (copy; btrfs and reflink on loop volumes when run as root) and each
history, in one run:

- replay     the baseline: CREATE DATABASE in one running server (Debian's PostgreSQL, fsync off),
             then every migration applied in order (one `psql -f ... -f ...`; `alembic upgrade head`)
- per file   the same with one `psql -f FILE` per migration, as a migration runner or a shell loop
             applies them (psql histories only; issue 19's baseline)
- cold       `sqlrs prepare` of the whole chain in a fresh state dir (engine running, base state
             cached: the base is shared by every chain of a runtime), to a usable DSN
- hit        the same prepare again (all cached)
- edit mid   the middle migration edited (a statement appended), prepare again
- edit last  the last migration edited, prepare again
- disk       what all kept states take (`status`: allocated bytes, CoW-aware) ÷ the largest one's
             data directory (after the cold build)

and prints each against the replay of the same run. Histories:

- lemmy      the first N (default 247) diesel migrations of LemmyNet/lemmy (up.sql files, in
             order), staged from a bare mirror of the repository (`--lemmy-mirror`, its commit
             printed) or a folder of numbered .sql files (`--lemmy-dir`)
- sakila+8   Sakila's schema and data, then 8 small migrations (as bench_peers' rebuild)
- alembic    examples/alembic-shop (7 revisions, two of them data migrations)

    .venv/bin/python bench/bench_cold.py [--stores copy,btrfs,reflink] [--histories lemmy,sakila,alembic]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import DATASETS, SharedServer, run  # noqa: E402
from bench_snapshots import LOOP_BACKENDS  # noqa: E402

from sqlrs.adapters.snapshots import _fs  # noqa: E402


@dataclass
class History:
    name: str
    folder: Path
    files: list[str]  # psql: the migration files in order; alembic: the revision files
    kind: str = "psql"  # or "alembic"
    note: str = ""

    def edit(self, index: int, tag: str) -> None:
        path = self.folder / self.files[index]
        if self.kind == "alembic":  # a revision's code changes: one more statement in upgrade()
            text = path.read_text()
            marker = "def upgrade() -> None:\n"
            path.write_text(text.replace(marker, f"{marker}    op.execute('SELECT {len(tag)}  -- {tag}')\n", 1))
        else:
            with path.open("a") as out:
                out.write(f"\nSELECT 1 AS edited_{tag};\n")


def stage_lemmy(args: argparse.Namespace, work: Path) -> History:
    folder = work / "lemmy"
    folder.mkdir()
    if args.lemmy_dir:
        names = sorted(p.name for p in Path(args.lemmy_dir).glob("*.sql"))[: args.lemmy_count]
        for name in names:
            shutil.copy(Path(args.lemmy_dir) / name, folder / name)
        return History("lemmy", folder, names, note=f"{len(names)} files from {args.lemmy_dir}")
    mirror = Path(args.lemmy_mirror)
    commit = run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"]).strip()
    dirs = sorted(run(["git", "--git-dir", str(mirror), "ls-tree", "-d", "--name-only", commit,
                       "migrations/"]).split())[: args.lemmy_count]
    names = []
    for index, directory in enumerate(dirs, 1):
        name = f"{index:03d}_{Path(directory).name}.sql"
        (folder / name).write_text(run(["git", "--git-dir", str(mirror), "show", f"{commit}:{directory}/up.sql"]))
        names.append(name)
    return History("lemmy", folder, names, note=f"LemmyNet/lemmy@{commit[:12]}, {len(names)} migrations")


def stage_sakila(work: Path) -> History:
    folder = work / "sakila"
    folder.mkdir()
    files = []
    for name in ("1-postgres-sakila-schema.sql", "2-postgres-sakila-insert-data-using-copy.sql"):
        shutil.copy(DATASETS / "sakila" / name, folder / name)
        files.append(name)
    for index in range(3, 11):
        name = f"{index:02d}-migration.sql"
        (folder / name).write_text(f"ALTER TABLE film ADD COLUMN extra_{index} int DEFAULT {index};\n"
                                   f"UPDATE rental SET last_update = last_update + interval '{index} s';\n")
        files.append(name)
    return History("sakila+8", folder, files, note="Sakila + 8 migrations")


def stage_alembic(work: Path) -> History:
    folder = work / "alembic-shop"
    shutil.copytree(REPO / "examples" / "alembic-shop", folder, ignore=shutil.ignore_patterns("__pycache__"))
    versions = sorted(p.name for p in (folder / "alembic" / "versions").glob("*.py"))
    return History("alembic-shop", folder, [f"alembic/versions/{name}" for name in versions], kind="alembic",
                   note=f"examples/alembic-shop, {len(versions)} revisions")


# -- the tools ------------------------------------------------------------------------------------
class Sqlrs:
    """sqlrs in its own state dir, on one store, run from the history's folder."""

    def __init__(self, state_dir: Path, store: str):
        self.state_dir = state_dir
        self.store = store
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(state_dir), "SQLRS_ENGINE_IDLE_TIMEOUT": "3600"}
        for name in ("SQLRS_ENGINE_ADDR", "TAIDON_ENGINE_ADDR", "SQLRS_SNAPSHOT"):
            self.env.pop(name, None)

    def run(self, *args: str, cwd: Path | None = None) -> str:
        return run([sys.executable, "-m", "sqlrs", *args], cwd=cwd or self.state_dir, env=self.env)

    def setup(self, size: str) -> None:
        self.state_dir.mkdir(parents=True)
        if self.store in LOOP_BACKENDS:
            self.run("init", "local", "--snapshot", self.store, "--store-size", size)
        else:
            self.run("init", "local", "--snapshot", "copy")
        self.run("config", "set", "cache.capacity.max_bytes", "0")
        self.run("config", "set", "warm.enabled", "false")  # a cold build is the question, not spares

    def prepare(self, history: History) -> str:
        if history.kind == "alembic":
            return self.run("-q", "prepare:alembic", "--runtime", "native", cwd=history.folder).strip()
        args = [arg for name in history.files for arg in ("-f", name)]
        return self.run("-q", "prepare:psql", "--runtime", "native", "--", *args, cwd=history.folder).strip()

    def remove_instances(self) -> None:
        for instance in json.loads(self.run("ls", "--instances", "-o", "json")):
            self.run("rm", "--force", instance["id"])

    def disk(self) -> tuple[int, int]:
        """(allocated bytes of all kept states, allocated bytes of the largest state's directory)."""
        status = json.loads(self.run("status", "-o", "json"))
        states = self.state_dir / "store" / "states"
        largest = max((_du(path) for path in states.iterdir()), default=0)
        return int(status["cache"]["size_bytes"]), largest

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.remove_instances()
        subprocess.run([sys.executable, "-m", "sqlrs", "engine", "stop"], env=self.env, capture_output=True,
                       check=False)
        for point in sorted(_fs.mounts_below(self.state_dir), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                time.sleep(1)
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _du(path: Path) -> int:
    return int(run(["du", "-s", "--block-size=1", str(path)]).split()[0])


def usable(dsn: str) -> None:
    run(["psql", "-X", "-At", "-d", dsn, "-c", "SELECT 1"])


PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]


class Replay:
    """The baseline: the migrations applied in order into a fresh database of one running server."""

    def __init__(self, work: Path):
        self.server = SharedServer(work / "replay")
        (work / "replay").mkdir()
        self.server.start()
        self.count = 0

    def __call__(self, history: History) -> float:
        """All the migrations in one process: one psql with every file, or `alembic upgrade head`."""
        if history.kind == "alembic":
            code = ("import sys; from alembic.config import Config; from alembic import command; "
                    "c = Config('alembic.ini'); c.set_main_option('sqlalchemy.url', sys.argv[1]); "
                    "command.upgrade(c, 'head')")
            return self._timed(history, lambda dsn: [
                [sys.executable, "-c", code, dsn.replace("postgresql://", "postgresql+psycopg://")]])
        return self._timed(history, lambda dsn: [
            [*PSQL, "-d", dsn, *[arg for name in history.files for arg in ("-f", name)]]])

    def per_file(self, history: History) -> float:
        """One psql per migration file: what a loop over the files costs."""
        return self._timed(history, lambda dsn: [[*PSQL, "-d", dsn, "-f", name] for name in history.files])

    def _timed(self, history: History, commands: Callable[[str], list[list[str]]]) -> float:
        """Seconds to a usable fresh database with `commands(dsn)` run in it, in order."""
        self.count += 1
        dbname = f"replay_{self.count}"
        started = time.perf_counter()
        self.server.sql(f'CREATE DATABASE "{dbname}"')
        dsn = self.server.dsn(dbname)
        for command in commands(dsn):
            run(command, cwd=history.folder)
        usable(dsn)
        return time.perf_counter() - started

    def close(self) -> None:
        self.server.stop()


# -- the benchmark --------------------------------------------------------------------------------
@dataclass
class Row:
    store: str
    history: str
    replay: float = 0.0
    per_file: float = 0.0  # 0: not measured (alembic)
    cold: float = 0.0
    hit: float = 0.0
    edit_mid: float = 0.0
    edit_last: float = 0.0
    disk_total: int = 0
    disk_largest: int = 0
    kept: int = 0
    steps: int = 0
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        return {"cold": self.cold / self.replay, "edit_mid": self.edit_mid / self.replay,
                "edit_last": self.edit_last / self.replay, "hit": self.hit / self.replay,
                "disk": self.disk_total / max(self.disk_largest, 1)}


def timed_prepare(tool: Sqlrs, history: History) -> float:
    started = time.perf_counter()
    dsn = tool.prepare(history)
    usable(dsn)
    seconds = time.perf_counter() - started
    tool.remove_instances()
    return seconds


def bench(store: str, history: History, replay: Replay, args: argparse.Namespace, work: Path,
          say: Callable[[str], None]) -> Row:
    row = Row(store, history.name, steps=len(history.files))
    tool = Sqlrs(work / f"sq-{store}-{history.name}", store)
    folder = work / f"{store}-{history.name}"
    shutil.copytree(history.folder, folder)
    (folder / ".git").mkdir(exist_ok=True)  # the workspace root: includes stay inside the history's folder
    history = History(history.name, folder, history.files, history.kind, history.note)
    try:
        tool.setup(args.store_size)
        tool.run("-q", "prepare:psql", "--runtime", "native", "--", "-c", "select 1")  # the engine and the base
        tool.remove_instances()
        row.replay = statistics.median(replay(history) for _ in range(args.replays))
        say(f"{store:8s} {history.name:13s} replay    {row.replay:7.2f} s")
        if history.kind == "psql":
            row.per_file = statistics.median(replay.per_file(history) for _ in range(args.replays))
            say(f"{store:8s} {history.name:13s} per file  {row.per_file:7.2f} s")
        row.cold = timed_prepare(tool, history)
        say(f"{store:8s} {history.name:13s} cold      {row.cold:7.2f} s  {row.cold / row.replay:5.2f}x")
        row.disk_total, row.disk_largest = tool.disk()
        row.kept = len(json.loads(tool.run("ls", "--states", "-o", "json"))) - 2  # without select 1 and the base
        row.hit = statistics.median(timed_prepare(tool, history) for _ in range(3))
        say(f"{store:8s} {history.name:13s} hit       {row.hit:7.2f} s")
        history.edit(len(history.files) // 2, "mid")
        row.edit_mid = timed_prepare(tool, history)
        say(f"{store:8s} {history.name:13s} edit mid  {row.edit_mid:7.2f} s  {row.edit_mid / row.replay:5.2f}x")
        history.edit(len(history.files) - 1, "last")
        row.edit_last = timed_prepare(tool, history)
        say(f"{store:8s} {history.name:13s} edit last {row.edit_last:7.2f} s  {row.edit_last / row.replay:5.2f}x")
    finally:
        tool.close()
        shutil.rmtree(folder, ignore_errors=True)
    return row


def report(rows: list[Row], histories: list[History]) -> str:
    lines = ["| store | history | replay | cold | ÷ replay | edit mid | ÷ replay | edit last | ÷ replay | hit "
             "| states kept / steps | disk ÷ largest state | psql per file | cold, edit mid ÷ it |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r = row.ratios()
        lines.append(f"| {row.store} | {row.history} | {row.replay:.2f} s | {row.cold:.2f} s | {r['cold']:.2f}x "
                     f"| {row.edit_mid:.2f} s | {r['edit_mid']:.2f}x | {row.edit_last:.2f} s | {r['edit_last']:.2f}x "
                     f"| {row.hit * 1000:.0f} ms | {row.kept} / {row.steps} | {r['disk']:.1f}x "
                     f"({row.disk_total / 2**20:.0f} / {row.disk_largest / 2**20:.0f} MiB) | "
                     + (f"{row.per_file:.2f} s | {row.cold / row.per_file:.2f}x, {row.edit_mid / row.per_file:.2f}x |"
                        if row.per_file else "— | — |"))
    lines.append("")
    lines += [f"- {h.name}: {h.note}" for h in histories]
    return "\n".join(lines)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="sqcold", dir="/tmp"))
    os.chmod(work, 0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="copy,btrfs,reflink")
    parser.add_argument("--histories", default="lemmy,sakila,alembic")
    parser.add_argument("--lemmy-mirror", default="/work/.mirror/LemmyNet+lemmy/repo")
    parser.add_argument("--lemmy-dir", default="")
    parser.add_argument("--lemmy-count", type=int, default=247)
    parser.add_argument("--replays", type=int, default=3, help="replays per history and store (median)")
    parser.add_argument("--store-size", default="20G")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()
    stores = [s for s in args.stores.split(",") if s]
    if os.geteuid() != 0:
        stores = [s for s in stores if s not in LOOP_BACKENDS]

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rows: list[Row] = []
    with workdir() as work:
        histories = []
        for name in args.histories.split(","):
            if name == "lemmy":
                histories.append(stage_lemmy(args, work))
            elif name == "sakila":
                histories.append(stage_sakila(work))
            elif name == "alembic":
                histories.append(stage_alembic(work))
        replay = Replay(work)
        try:
            for store in stores:
                for history in histories:
                    rows.append(bench(store, history, replay, args, work, say))
        finally:
            replay.close()
    print(report(rows, histories))
    if args.json:
        Path(args.json).write_text(json.dumps([row.__dict__ for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
