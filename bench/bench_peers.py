#!/usr/bin/env python3
"""sqlrs against the tools users would pick instead, measured in one run on the same data.

Methods, each giving "a usable, isolated database with the data set loaded" (a DSN that
accepts a connection and answers a query):

- sqlrs hit      `sqlrs prepare:psql` of a cached chain (per runtime, per snapshot backend)
- sqlrs library hit  `sqlrs.Client().create_instance(state)` in this process (what the pytest plugin
                 and `Client.instance()` do per test), with the engine's own time and warm claims
- sqlrs cold     the same chain with its steps not cached (base cached, engine warm)
- psql reload    CREATE DATABASE + `psql -f` of the scripts into one shared server
- template copy  CREATE DATABASE ... TEMPLATE loaded (pgtestdb, IntegreSQL, pytest-postgresql)
- pytest-postgresql  its DatabaseJanitor cloning the loaded template, as its fixture does per test
- testcontainers a fresh container (testcontainers-python) + initdb + `psql -f` of the scripts

Plus CLI overhead, rebuild after editing the last of N steps, and 20 instances back to back and
concurrently. Prints Markdown; writes JSON, Markdown and a PNG plot to bench/results/.

    .venv/bin/python bench/bench_peers.py [--runs 5] [--quick] [--datasets chinook,sakila,pgbench10]
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("SQLRS_DATASETS", REPO.parent / "shared" / "datasets"))
if not DATASETS.exists():
    DATASETS = Path("/work/shared/datasets")
RESULTS = REPO / "bench" / "results"
PYTHON = sys.executable
TEST_IMAGE = os.environ.get("SQLRS_TEST_IMAGE", "localhost/sqlrs-test-postgres:16")
PG_BIN = Path(os.environ.get("SQLRS_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))

sys.path.insert(0, str(Path(__file__).parent))
from bench_snapshots import pgbench_sql  # noqa: E402 - one definition of the pgbench-shaped data set


# -- data sets ------------------------------------------------------------------------------------
@dataclass
class Dataset:
    name: str
    cwd: Path
    files: list[str]
    dbname: str = "postgres"  # where the data lands (Chinook creates its own database)
    check: str = "SELECT 1"
    size_bytes: int = 0

    def psql_args(self) -> list[str]:
        return [arg for name in self.files for arg in ("-f", name)]


def datasets(names: list[str], work: Path) -> list[Dataset]:
    found = []
    for name in names:
        if name == "chinook":
            found.append(Dataset("chinook", DATASETS / "chinook", ["Chinook_PostgreSql.sql"], dbname="chinook",
                                 check="SELECT 1 FROM invoice LIMIT 1"))
        elif name == "sakila":
            found.append(Dataset("sakila", DATASETS / "sakila", ["1-postgres-sakila-schema.sql",
                                                                 "2-postgres-sakila-insert-data-using-copy.sql"],
                                 check="SELECT 1 FROM rental LIMIT 1"))
        elif name.startswith("pgbench"):
            scale = int(name[len("pgbench"):] or 10)
            folder = work / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "pgbench.sql").write_text(pgbench_sql(scale))
            found.append(Dataset(name, folder, ["pgbench.sql"], check="SELECT 1 FROM pgbench_accounts LIMIT 1"))
        else:
            raise SystemExit(f"unknown data set {name}")
    return found


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Result:
    method: str
    dataset: str
    seconds: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def row(self) -> dict[str, Any]:
        return {"method": self.method, "dataset": self.dataset, "runs": len(self.seconds),
                "median_s": round(self.median, 4),
                "min_s": round(min(self.seconds), 4) if self.seconds else None,
                "max_s": round(max(self.seconds), 4) if self.seconds else None,
                "note": self.note, **self.extra}


def usable(dsn: str, check: str) -> None:
    """Block until `dsn` accepts a connection and answers `check`."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=30) as conn:
        conn.execute(check).fetchone()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        user: str | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, user=user, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


# -- sqlrs ----------------------------------------------------------------------------------------
class Sqlrs:
    def __init__(self, state_dir: Path, runtime: str, backend: str):
        self.state_dir = state_dir
        self.runtime = runtime
        self.backend = backend
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(state_dir), "SQLRS_ENGINE_IDLE_TIMEOUT": "3600"}
        self.env.pop("SQLRS_ENGINE_ADDR", None)
        self.label = f"sqlrs {runtime}+{backend}"

    def cli(self, *args: str, cwd: Path | None = None) -> str:
        return run([PYTHON, "-m", "sqlrs", "-q", *args], cwd=cwd, env=self.env)

    def setup(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.backend in ("btrfs", "reflink"):
            self.cli("init", "local", "--snapshot", self.backend, "--store-size", os.environ.get(
                "SQLRS_BENCH_STORE_SIZE", "24G"))
        self.cli("engine", "start")
        # build the base cluster once, so "cold" below means the data set's own steps
        self.cli("prepare:psql", *self.flags(), "--", "-c", "SELECT 1", cwd=self.state_dir)
        self.rm_all_instances()

    def flags(self) -> list[str]:
        flags = ["--runtime", self.runtime]
        if self.runtime in ("docker", "podman"):
            flags += ["--image", TEST_IMAGE]
        return flags

    def prepare(self, dataset: Dataset, name: str | None = None) -> str:
        extra = ["--name", name] if name else []
        dsn = self.cli("prepare:psql", *self.flags(), *extra, "--", *dataset.psql_args(), cwd=dataset.cwd).strip()
        return dsn.rsplit("/", 1)[0] + "/" + dataset.dbname

    def plan(self, dataset: Dataset) -> list[dict[str, Any]]:
        out = self.cli("plan:psql", *self.flags(), "-o", "json", "--", *dataset.psql_args(), cwd=dataset.cwd)
        plan: list[dict[str, Any]] = json.loads(out)
        return plan

    def rm(self, ref: str, *flags: str) -> None:
        self.cli("rm", ref, *flags)

    def instances(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.cli("ls", "--instances", "-o", "json"))
        return data

    def rm_all_instances(self) -> None:
        for instance in self.instances():
            self.rm(instance["id"])

    def store_bytes(self, subdir: str = "") -> int:
        return du_bytes(self.state_dir / "store" / subdir)

    def close(self) -> None:
        try:
            self.rm_all_instances()
            self.cli("engine", "stop")
        except RuntimeError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        store = self.state_dir / "store"
        if self.backend in ("btrfs", "reflink") and os.path.ismount(store):
            subprocess.run(["umount", str(store)], check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def du_bytes(path: Path) -> int:
    """Allocated bytes under `path` (hard links once); CoW-shared extents count for each file."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.stdout else 0


def df_used(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


# -- one shared server: psql reload, template copy, pytest-postgresql ---------------------------------
class SharedServer:
    """One PostgreSQL server (Debian's binaries, run as `postgres`) shared by the peers that use one."""

    def __init__(self, work: Path):
        self.dir = work / "shared-server"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        if self.user:
            shutil.chown(self.dir, self.user)
        run([str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-locale", "-N"], user=self.user)
        run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
             f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
             "start"], user=self.user)

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def load(self, dataset: Dataset, dbname: str) -> str:
        """CREATE DATABASE + psql -f the scripts; returns the DSN of the loaded database."""
        if dataset.dbname == "postgres":
            self.sql(f'CREATE DATABASE "{dbname}"')
            target = dbname
        else:  # the script makes its own database (Chinook): give it a fresh server-wide name
            target = dataset.dbname
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname if dataset.dbname == "postgres"
                                                                         else "postgres"),
             *dataset.psql_args()], cwd=dataset.cwd)
        return self.dsn(target)

    def stop(self) -> None:
        subprocess.run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       user=self.user, capture_output=True, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the benchmark --------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="sqb", dir="/tmp"))
        os.chmod(self.work, 0o755)
        self.results: list[Result] = []
        self.sections: dict[str, Any] = {}

    def record(self, result: Result) -> Result:
        self.results.append(result)
        print(f"  {result.method:34s} {result.dataset:10s} median {result.median * 1000:9.1f} ms"
              f"  (n={len(result.seconds)}) {result.note}", file=sys.stderr, flush=True)
        return result

    def measure(self, method: str, dataset: Dataset, runs: int, once: Callable[[int], str],
                cleanup: Callable[[int], None] | None = None, note: str = "") -> Result:
        result = Result(method, dataset.name, note=note)
        for index in range(runs):
            seconds, dsn = timed(lambda index=index: once(index))  # type: ignore[misc]
            start = time.perf_counter()
            usable(dsn, dataset.check)
            result.seconds.append(seconds + time.perf_counter() - start)
            if cleanup:
                cleanup(index)
        return self.record(result)

    # sqlrs ----------------------------------------------------------------------------------------
    def sqlrs_variants(self) -> list[tuple[str, str]]:
        variants = []
        for backend in self.args.backends:
            for runtime in self.args.runtimes:
                if backend != self.args.backends[0] and runtime != "native" and not self.args.all_combinations:
                    continue
                variants.append((runtime, backend))
        return variants

    def bench_sqlrs(self, data: list[Dataset]) -> None:
        for runtime, backend in self.sqlrs_variants():
            tool = Sqlrs(self.work / f"s-{runtime[:3]}-{backend[:3]}", runtime, backend)
            try:
                tool.setup()
            except RuntimeError as exc:
                print(f"skipping {tool.label}: {exc}", file=sys.stderr)
                tool.close()
                continue
            try:
                for dataset in data:
                    self._sqlrs_dataset(tool, dataset, cold=(backend == self.args.backends[0]))
            finally:
                tool.close()

    def _sqlrs_dataset(self, tool: Sqlrs, dataset: Dataset, cold: bool) -> None:
        runs = self.args.runs
        if cold and tool.runtime in self.args.cold_runtimes:

            def forget_steps(index: int) -> None:  # untimed: back to "only the base is cached"
                tool.rm_all_instances()
                tool.rm(tool.plan(dataset)[1]["state_id"], "--recurse")

            if tool.plan(dataset)[1]["cached"]:
                forget_steps(0)
            self.measure(f"{tool.label} cold build", dataset, max(1, runs // 2), lambda index: tool.prepare(dataset),
                         cleanup=forget_steps, note="steps built, base cached, engine warm")
        tool.prepare(dataset)  # cached from here on
        tool.rm_all_instances()
        self.measure(f"{tool.label} hit", dataset, runs, lambda index: tool.prepare(dataset),
                     cleanup=lambda index: tool.rm_all_instances(), note="cached chain, new instance")
        state = tool.plan(dataset)[-1]
        if tool.runtime in self.args.library_runtimes:
            self._sqlrs_library(tool, dataset, state["state_id"])
        if tool.backend == "copy" and dataset.dbname == "postgres":
            self._sqlrs_database_kind(tool, dataset, state["state_id"])
        dataset.size_bytes = dataset.size_bytes or state_size(tool, state["state_id"])

    def _sqlrs_library(self, tool: Sqlrs, dataset: Dataset, state_id: str) -> None:
        """`sqlrs.Client().create_instance(state)` in this process, as the peers are measured: what
        the Python library and the pytest plugin do per test once the state is built."""
        import sqlrs

        client = sqlrs.Client(tool.state_dir, runtime=tool.runtime,
                              image=TEST_IMAGE if tool.runtime in ("docker", "podman") else None)
        made: dict[int, Any] = {}

        def once(index: int) -> str:
            made[index] = client.create_instance(state_id)
            return str(made[index].dsn).rsplit("/", 1)[0] + "/" + dataset.dbname

        client.remove(client.create_instance(state_id))  # the client's first connection, untimed
        engine: list[float] = []
        claimed: list[bool] = []

        def cleanup(index: int) -> None:
            instance = made.pop(index)
            engine.append(instance.engine_seconds or 0.0)
            claimed.append(instance.from_pool)
            client.remove(instance)

        result = self.measure(f"{tool.label} library hit", dataset, self.args.runs, once, cleanup=cleanup,
                              note="Client().create_instance(state) in-process, engine warm")
        result.extra.update(engine_median_ms=round(statistics.median(engine) * 1000, 1) if engine else None,
                            warm_claims=sum(claimed))
        result.note += (f"; engine {result.extra['engine_median_ms']} ms median, "
                        f"{sum(claimed)}/{len(claimed)} warm")

    def _sqlrs_database_kind(self, tool: Sqlrs, dataset: Dataset, state_id: str) -> None:
        """`--kind database` (docs/decisions/0004): a database copied from a template in the state's
        shared server, the fast kind where a clone is a full copy. Only for data sets that live in
        `postgres` (Chinook makes a database of its own, which that kind refuses)."""
        import sqlrs

        def cli_once(index: int) -> str:
            return tool.cli("prepare:psql", *tool.flags(), "--kind", "database", "--",
                            *dataset.psql_args(), cwd=dataset.cwd).strip()

        tool.cli("prepare:psql", *tool.flags(), "--kind", "database", "--", *dataset.psql_args(),
                 cwd=dataset.cwd)  # the state's shared server starts here, untimed
        tool.rm_all_instances()
        self.measure(f"{tool.label} database hit", dataset, self.args.runs, cli_once,
                     cleanup=lambda index: tool.rm_all_instances(),
                     note="--kind database: template copy in the state's shared server, database-level isolation")
        client = sqlrs.Client(tool.state_dir, runtime=tool.runtime)
        made: dict[int, Any] = {}

        def library_once(index: int) -> str:
            made[index] = client.create_instance(state_id, kind="database")
            return str(made[index].dsn)

        def library_cleanup(index: int) -> None:
            client.remove(made.pop(index))

        self.measure(f"{tool.label} database library hit", dataset, self.args.runs, library_once,
                     cleanup=library_cleanup,
                     note="Client().create_instance(state, kind='database') in-process")

    # peers on one shared server -------------------------------------------------------------------------
    def bench_shared(self, data: list[Dataset]) -> None:
        server = SharedServer(self.work)
        server.start()
        try:
            for dataset in data:
                self._shared_dataset(server, dataset)
        finally:
            server.stop()

    def _shared_dataset(self, server: SharedServer, dataset: Dataset) -> None:
        runs = self.args.runs
        counter = iter(range(10**6))

        def reload(index: int) -> str:
            return server.load(dataset, f"reload_{next(counter)}")

        def drop_reload(index: int) -> None:
            if dataset.dbname == "postgres":
                server.sql(f'DROP DATABASE IF EXISTS "reload_{index}"')

        self.measure("psql reload", dataset, runs, reload, cleanup=drop_reload,
                     note="CREATE DATABASE + psql -f, shared server")
        template = f"tpl_{dataset.name}"
        source_db = server.load(dataset, template).rsplit("/", 1)[1]
        if source_db != template:
            server.sql(f'ALTER DATABASE "{source_db}" RENAME TO "{template}"')
        server.sql(f'ALTER DATABASE "{template}" IS_TEMPLATE true')

        def copy(index: int) -> str:
            server.sql(f'CREATE DATABASE "copy_{index}" TEMPLATE "{template}"')
            return server.dsn(f"copy_{index}")

        self.measure("template copy", dataset, runs, copy,
                     cleanup=lambda index: server.sql(f'DROP DATABASE "copy_{index}"'),
                     note="CREATE DATABASE ... TEMPLATE, shared server")
        self._pytest_postgresql(server, dataset, template, runs)

    def _pytest_postgresql(self, server: SharedServer, dataset: Dataset, template: str, runs: int) -> None:
        try:
            from pytest_postgresql.janitor import DatabaseJanitor
        except ImportError:
            print("skipping pytest-postgresql: not installed (pip install -e .[bench])", file=sys.stderr)
            return
        janitors: dict[int, Any] = {}

        def once(index: int) -> str:
            janitor = DatabaseJanitor(user="postgres", host="127.0.0.1", port=server.port, dbname=f"pyt_{index}",
                                      template_dbname=template)
            janitor.init()
            janitors[index] = janitor
            return server.dsn(f"pyt_{index}")

        self.measure("pytest-postgresql", dataset, runs, once, cleanup=lambda index: janitors.pop(index).drop(),
                     note="DatabaseJanitor from the loaded template (its per-test fixture)")

    # testcontainers ---------------------------------------------------------------------------------
    def bench_testcontainers(self, data: list[Dataset]) -> None:
        try:
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.waiting_utils import wait_for_logs
        except ImportError:
            print("skipping testcontainers: not installed (pip install -e .[bench])", file=sys.stderr)
            return
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # no registry: no ryuk image
        # what the official image's entrypoint does: initdb, let clients in over TCP, start
        command = ("sh -c 'initdb -U postgres --auth=trust -D \"$PGDATA\" >/dev/null && "
                   "echo \"host all all all trust\" >> \"$PGDATA/pg_hba.conf\" && "
                   "exec postgres -c listen_addresses=* -c fsync=off'")
        for dataset in data:
            self._testcontainers_dataset(dataset, DockerContainer, wait_for_logs, command)

    def _testcontainers_dataset(self, dataset: Dataset, container_class: Any, wait_for_logs: Any,
                                command: str) -> None:
        containers: dict[int, Any] = {}

        def once(index: int) -> str:
            container = container_class(TEST_IMAGE).with_command(command).with_exposed_ports(5432)
            container.with_kwargs(user="postgres")
            container.start()
            containers[index] = container
            wait_for_logs(container, "database system is ready to accept connections", timeout=60)
            host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
            base = f"postgresql://postgres@{host}:{port}"
            for _ in range(100):  # the log line can precede the TCP listener by a moment
                try:
                    usable(f"{base}/postgres", "SELECT 1")
                    break
                except Exception:
                    time.sleep(0.05)
            run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", f"{base}/postgres", *dataset.psql_args()],
                cwd=dataset.cwd)
            return f"{base}/{dataset.dbname}"

        self.measure("testcontainers", dataset, max(1, self.args.runs // 2), once,
                     cleanup=lambda index: containers.pop(index).stop(),
                     note=f"fresh container ({TEST_IMAGE}) + initdb + psql -f")

    # CLI overhead, rebuild, many instances -------------------------------------------------------------
    def bench_cli(self) -> None:
        tool = Sqlrs(self.work / "s-cli", "native", "copy")
        tool.setup()
        try:
            rows = []
            floor = self._repeat([PYTHON, "-c", "pass"], tool.env)
            for label, argv in (("python -c pass", None), ("sqlrs --help", ["--help"]),
                                ("sqlrs status", ["status"]), ("sqlrs ls", ["ls"])):
                seconds = floor if argv is None else self._repeat([PYTHON, "-m", "sqlrs", *argv], tool.env)
                rows.append({"command": label, "median_ms": round(statistics.median(seconds) * 1000, 1),
                             "min_ms": round(min(seconds) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1),
                             "vs_floor": round(statistics.median(seconds) / statistics.median(floor), 2)})
            script = shutil.which("sqlrs") or str(Path(PYTHON).parent / "sqlrs")
            if Path(script).exists():
                seconds = self._repeat([script, "status"], tool.env)
                rows.append({"command": "sqlrs status (console script)",
                             "median_ms": round(statistics.median(seconds) * 1000, 1),
                             "min_ms": round(min(seconds) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1),
                             "vs_floor": round(statistics.median(seconds) / statistics.median(floor), 2)})
            self.sections["cli"] = rows
            for row in rows:
                print(f"  {row['command']:32s} {row['median_ms']:7.1f} ms", file=sys.stderr)
        finally:
            tool.close()

    def _repeat(self, argv: list[str], env: dict[str, str], n: int = 20) -> list[float]:
        subprocess.run(argv, env=env, capture_output=True, check=False)  # warm caches and the engine
        seconds = []
        for _ in range(n):
            start = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, check=False)
            seconds.append(time.perf_counter() - start)
        return seconds

    def bench_rebuild(self, steps: int = 10) -> None:
        folder = self.work / "rebuild"
        folder.mkdir()
        sakila = DATASETS / "sakila"
        files = []
        for name in ("1-postgres-sakila-schema.sql", "2-postgres-sakila-insert-data-using-copy.sql"):
            shutil.copy(sakila / name, folder / name)
            files.append(name)
        for index in range(3, steps + 1):
            name = f"{index:02d}-migration.sql"
            (folder / name).write_text(f"ALTER TABLE film ADD COLUMN extra_{index} int DEFAULT {index};\n"
                                       f"UPDATE rental SET last_update = last_update + interval '{index} s';\n")
            files.append(name)
        dataset = Dataset("sakila+8", folder, files, check="SELECT 1 FROM rental LIMIT 1")
        tool = Sqlrs(self.work / "s-reb", "native", "copy")
        tool.setup()
        server = SharedServer(self.work / "reb")
        (self.work / "reb").mkdir()
        server.start()
        try:
            tool.prepare(dataset)
            edits = iter(range(10**6))

            def edit_last_and_prepare(index: int) -> str:
                (folder / files[-1]).write_text(f"ALTER TABLE film ADD COLUMN edited_{next(edits)} int;\n")
                return tool.prepare(dataset)

            sqlrs_result = self.measure(f"sqlrs rebuild last of {steps}", dataset, self.args.runs,
                                        edit_last_and_prepare, note="only the edited step is built")
            replay = self.measure(f"psql replay of {steps}", dataset, self.args.runs,
                                  lambda index: server.load(dataset, f"replay_{index}"),
                                  note="every step again into a fresh database")
            self.sections["rebuild"] = {"steps": steps, "sqlrs_median_s": round(sqlrs_result.median, 3),
                                        "replay_median_s": round(replay.median, 3),
                                        "speedup": round(replay.median / sqlrs_result.median, 2)}
        finally:
            server.stop()
            tool.close()

    def bench_many(self, count: int = 20) -> None:
        dataset = next((d for d in self.data if d.name == self.args.many_dataset), self.data[0])
        section: dict[str, Any] = {"dataset": dataset.name, "instances": count}
        for runtime, backend in self.sqlrs_variants():
            tool = Sqlrs(self.work / f"m-{runtime[:3]}-{backend[:3]}", runtime, backend)
            try:
                tool.setup()
            except RuntimeError as exc:
                print(f"skipping many-instances for {tool.label}: {exc}", file=sys.stderr)
                tool.close()
                continue
            try:
                tool.prepare(dataset)
                tool.rm_all_instances()
                store = tool.state_dir / "store"
                before = df_used(store)
                start = time.perf_counter()
                for _ in range(count):
                    tool.prepare(dataset)
                serial = time.perf_counter() - start
                used_serial = df_used(store) - before
                tool.rm_all_instances()
                before = df_used(store)
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
                    list(pool.map(tool.prepare, [dataset] * count))
                concurrent_s = time.perf_counter() - start
                used_concurrent = df_used(store) - before
                section[tool.label] = {"back_to_back_s": round(serial, 2), "concurrent_s": round(concurrent_s, 2),
                                       "disk_used_bytes": used_serial, "disk_used_concurrent_bytes": used_concurrent,
                                       "state_bytes": dataset.size_bytes}
                print(f"  {tool.label}: {count} back to back {serial:.2f}s, concurrently {concurrent_s:.2f}s, "
                      f"disk +{used_serial / 2**20:.0f} MiB", file=sys.stderr)
            finally:
                tool.close()
        server = SharedServer(self.work / "many")
        (self.work / "many").mkdir()
        server.start()
        try:
            template = server.load(dataset, "tpl_many").rsplit("/", 1)[1]
            before = df_used(server.dir)
            start = time.perf_counter()
            for index in range(count):
                server.sql(f'CREATE DATABASE "m_{index}" TEMPLATE "{template}"')
            serial = time.perf_counter() - start
            used = df_used(server.dir) - before
            section["template copy"] = {"back_to_back_s": round(serial, 2), "disk_used_bytes": used}
            print(f"  template copy: {count} back to back {serial:.2f}s, disk +{used / 2**20:.0f} MiB",
                  file=sys.stderr)
        finally:
            server.stop()
        self.sections["many"] = section

    # report ---------------------------------------------------------------------------------------
    def report(self) -> str:
        lines = ["## Time to a usable, isolated database", "",
                 "| method | data set | median ms | min-max ms | n | vs fastest sqlrs hit | note |",
                 "|---|---|---:|---:|---:|---:|---|"]
        best: dict[str, Result] = {}  # data set -> the fastest sqlrs cache hit measured on it
        for r in self.results:
            is_hit = r.method.startswith("sqlrs ") and r.method.endswith(" hit") and bool(r.seconds)
            if is_hit and (r.dataset not in best or r.median < best[r.dataset].median):
                best[r.dataset] = r
        for r in sorted(self.results, key=lambda r: (r.dataset, r.median)):
            ratio = f"{r.median / best[r.dataset].median:.2f}x" if r.dataset in best else "-"
            lines.append(f"| {r.method} | {r.dataset} | {r.median * 1000:.0f} | "
                         f"{min(r.seconds) * 1000:.0f}-{max(r.seconds) * 1000:.0f} | {len(r.seconds)} | "
                         f"{ratio} | {r.note} |")
        peers = [r for r in self.results if not r.method.startswith("sqlrs") and r.dataset in best
                 and r.seconds and "replay" not in r.method]
        if peers:
            # a CLI hit pays a process start, the library one does not: each against the peers
            # (measured in-process, as a test suite meets them)
            lines += ["", "### The fastest sqlrs hits against each peer (same run, same data)", "",
                      "| data set | path | sqlrs (fastest hit) | ms | peer | ms | peer / sqlrs |",
                      "|---|---|---|---:|---|---:|---:|"]
            for path, is_path in (("CLI", lambda m: "library" not in m), ("library", lambda m: "library" in m)):
                fastest: dict[str, Result] = {}
                for r in self.results:
                    is_hit = r.method.startswith("sqlrs ") and r.method.endswith(" hit") and bool(r.seconds)
                    if is_hit and is_path(r.method) and (r.dataset not in fastest
                                                         or r.median < fastest[r.dataset].median):
                        fastest[r.dataset] = r
                for r in sorted(peers, key=lambda r: (r.dataset, r.median)):
                    if r.dataset in fastest and r.method in ("template copy", "pytest-postgresql"):
                        hit = fastest[r.dataset]
                        lines.append(f"| {r.dataset} | {path} | {hit.method} | {hit.median * 1000:.0f} | {r.method} | "
                                     f"{r.median * 1000:.0f} | {r.median / hit.median:.2f}x |")
        if "cli" in self.sections:
            lines += ["", "## CLI overhead (warm engine)", "", "| command | median ms | min-max ms | vs floor |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {row['command']} | {row['median_ms']} | {row['min_ms']}-{row['max_ms']} | "
                      f"{row['vs_floor']}x |" for row in self.sections["cli"]]
        if "rebuild" in self.sections:
            rb = self.sections["rebuild"]
            lines += ["", "## Rebuild after editing the last step", "",
                      f"{rb['steps']} steps (Sakila + migrations): sqlrs rebuild {rb['sqlrs_median_s']} s vs psql "
                      f"replay {rb['replay_median_s']} s — {rb['speedup']}x faster."]
        if "many" in self.sections:
            many = self.sections["many"]
            lines += ["", f"## {many['instances']} instances of {many['dataset']}", "",
                      "| method | back to back s | concurrently s | disk used MiB |", "|---|---:|---:|---:|"]
            for label, row in many.items():
                if isinstance(row, dict):
                    lines.append(f"| {label} | {row.get('back_to_back_s')} | {row.get('concurrent_s', '-')} | "
                                 f"{row.get('disk_used_bytes', 0) / 2**20:.0f} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> bool:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        sizes = {d.name: d.size_bytes for d in self.data if d.size_bytes}
        if not sizes:
            return False
        fig, ax = plt.subplots(figsize=(9, 5.5))
        methods = sorted({r.method for r in self.results if r.dataset in sizes and "rebuild" not in r.method
                          and "replay" not in r.method})
        for method in methods:
            points = sorted((sizes[r.dataset] / 2**20, r.median * 1000) for r in self.results
                            if r.method == method and r.dataset in sizes)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("data set size (MiB, state size in the sqlrs store)")
        ax.set_ylabel("time to a usable database (ms, median)")
        ax.set_title("Time to DSN against data size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return True

    def main(self) -> int:
        self.data = datasets(self.args.datasets, self.work)
        sections = {"sqlrs": lambda: self.bench_sqlrs(self.data), "shared": lambda: self.bench_shared(self.data),
                    "testcontainers": lambda: self.bench_testcontainers(self.data), "cli": self.bench_cli,
                    "rebuild": self.bench_rebuild, "many": self.bench_many}
        try:
            for name, section in sections.items():
                if name not in self.args.only:
                    continue
                try:
                    section()
                except Exception as exc:  # one broken peer must not lose the others' numbers
                    print(f"section {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    self.sections.setdefault("errors", {})[name] = str(exc)[:500]
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        report = self.report()
        (RESULTS / f"peers-{stamp}.md").write_text(report)
        (RESULTS / f"peers-{stamp}.json").write_text(json.dumps(
            {"results": [r.row() for r in self.results], "sizes": {d.name: d.size_bytes for d in self.data},
             **self.sections}, indent=2))
        plotted = self.plot(RESULTS / f"peers-{stamp}.png")
        print(report)
        print(f"written: {RESULTS}/peers-{stamp}.{{md,json{',png' if plotted else ''}}}", file=sys.stderr)
        return 0


def state_size(tool: Sqlrs, state_id: str) -> int:
    """Bytes of a state's whole data directory (what a template copy has to copy)."""
    return du_bytes(tool.state_dir / "store" / "states" / state_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--datasets", default="chinook,sakila,pgbench10")
    parser.add_argument("--runtimes", default="native,docker,podman")
    parser.add_argument("--cold-runtimes", default="native")
    parser.add_argument("--library-runtimes", default="native",
                        help="runtimes whose in-process library path (Client.create_instance) is measured")
    parser.add_argument("--backends", default="btrfs,reflink,copy")
    parser.add_argument("--all-combinations", action="store_true",
                        help="every runtime on every backend (default: containers on the first backend only)")
    parser.add_argument("--only", default="sqlrs,shared,testcontainers,cli,rebuild,many")
    parser.add_argument("--many-dataset", default="pgbench10")
    parser.add_argument("--quick", action="store_true",
                        help="3 runs, native only, chinook and sakila unless --datasets is given")
    args = parser.parse_args()
    # measure the CLI as installed, with bytecode, even where PYTHONDONTWRITEBYTECODE is set
    compileall.compile_dir(str(REPO / "sqlrs"), quiet=1)
    if args.quick:
        args.runs, args.runtimes = 3, "native"
        if "--datasets" not in sys.argv:
            args.datasets = "chinook,sakila"
    for name in ("datasets", "runtimes", "backends", "only", "cold_runtimes", "library_runtimes"):
        setattr(args, name, [part for part in getattr(args, name).split(",") if part])
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
