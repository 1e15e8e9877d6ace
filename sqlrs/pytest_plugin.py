"""pytest plugin: every test (or module) gets its own fresh PostgreSQL instance from sqlrs.

Registered through the `pytest11` entry point, so installing sqlrs makes the fixtures available.
It stays inert (no engine, no import of the client) until a test asks for one of its fixtures.

Fixtures:
    sqlrs_instance         a fresh instance of the test's state (function scope), removed afterwards
    sqlrs_dsn              its DSN (a string)
    sqlrs_module_instance  one instance shared by the tests of a module
    sqlrs_state            the test's state (built once per session; for tests that start several)
    sqlrs_client           the session's sqlrs.Client

The state comes from the closest `@pytest.mark.sqlrs(files=[...], sql=[...], variables={...},
psql_args=[...], pool=N)` (paths relative to the test file), else from the configuration
(`sqlrs_files`, `sqlrs_sql`, `sqlrs_psql_args` ini options, paths relative to the ini file, or
`--sqlrs-file` on the command line). Paths may use environment variables (`${SAKILA_DIR}/x.sql`).
The state is built once (concurrent pytest-xdist workers included: the engine builds a state
once and makes the others wait) and cloned for every test.

Other input kinds: `alembic="alembic.ini"` (`to="REV"`) or `exec=[...]` (`inputs=[globs]`) in the
marker, or the `sqlrs_alembic` (`sqlrs_alembic_to`) / `sqlrs_exec` (`sqlrs_inputs`) ini options.
Alembic runs in the directory of its config file; a command in the directory of the test file
(marker) or of the ini file.

Warm pool (`sqlrs_pool_size` / `--sqlrs-pool N`): the engine keeps N started spares of the state
ready, so handing one to a test is a single API call of a few milliseconds. With
`sqlrs_pool_prefill` (default on) the first test waits until the pool is full. Every process of a
run (each xdist worker) holds the pool; it is drained when the last one finishes.

`--sqlrs-keep-failed` keeps a failing test's instance (no TTL) and prints its DSN. Other
instances get an idle TTL (`sqlrs_ttl`, default 600 s) so a killed test run leaves nothing
behind for long. The terminal summary reports how long tests waited for their instance
(`--sqlrs-report FILE` writes every number as JSON).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.client import Client, Instance, State

SESSION_KEY = pytest.StashKey["SqlrsSession"]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
INSTANCES_KEY = pytest.StashKey[list["Instance"]]()
PREFILL_TIMEOUT = 300.0


# -- options -----------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqlrs", "sqlrs: fresh PostgreSQL instances per test")
    group.addoption("--sqlrs-file", action="append", default=None, dest="sqlrs_file", metavar="FILE",
                    help="SQL file of the default state (repeatable; overrides the sqlrs_files ini option).")
    group.addoption("--sqlrs-psql-args", default=None, dest="sqlrs_psql_args", metavar="ARGS",
                    help="psql arguments of the default state, e.g. \"-f schema.sql -v env=test\".")
    group.addoption("--sqlrs-pool", type=int, default=None, dest="sqlrs_pool", metavar="N",
                    help="Keep N started instances of each state ready (0: no warm pool).")
    group.addoption("--sqlrs-keep-failed", action="store_true", default=None, dest="sqlrs_keep_failed",
                    help="Keep the instance of a failing test and print its DSN.")
    group.addoption("--sqlrs-state-dir", default=None, dest="sqlrs_state_dir", metavar="DIR",
                    help="sqlrs state directory (default: SQLRS_STATE_DIR or the platform default).")
    group.addoption("--sqlrs-runtime", default=None, dest="sqlrs_runtime",
                    choices=["auto", "docker", "podman", "native"], help="Where PostgreSQL runs.")
    group.addoption("--sqlrs-image", default=None, dest="sqlrs_image", help="Container image (docker/podman).")
    group.addoption("--sqlrs-ttl", type=int, default=None, dest="sqlrs_ttl", metavar="SECONDS",
                    help="Idle TTL of the instances tests get (0: none).")
    group.addoption("--sqlrs-report", default=None, dest="sqlrs_report", metavar="FILE",
                    help="Write per-test instance wait times and prepare times as JSON (give it as "
                         "--sqlrs-report=FILE: pytest may take a separate FILE argument for a test path).")
    parser.addini("sqlrs_files", "SQL files of the default state, in order (relative to the ini file)",
                  type="linelist", default=[])
    parser.addini("sqlrs_sql", "SQL commands run after sqlrs_files (one per line)", type="linelist", default=[])
    parser.addini("sqlrs_psql_args", "psql arguments of the default state (-f, -c, -v, -1)", type="args",
                  default=[])
    parser.addini("sqlrs_pool_size", "Warm pool size per state (0: none)", default="0")
    parser.addini("sqlrs_pool_prefill", "Wait for the warm pool to fill before the first test", type="bool",
                  default=True)
    parser.addini("sqlrs_ttl", "Idle TTL in seconds of the instances tests get (0: none)", default="600")
    parser.addini("sqlrs_state_dir", "sqlrs state directory", default="")
    parser.addini("sqlrs_runtime", "auto, docker, podman or native", default="")
    parser.addini("sqlrs_image", "Container image for docker/podman", default="")
    parser.addini("sqlrs_allow_outside", "Read SQL files outside the workspace (the git root)", type="bool",
                  default=False)
    parser.addini("sqlrs_keep_failed", "Keep failing tests' instances", type="bool", default=False)
    _add_input_options(parser)


def _add_input_options(parser: pytest.Parser) -> None:
    """The input kinds besides psql's (sqlrs prepare:alembic, prepare:exec)."""
    parser.addini("sqlrs_alembic", "Alembic config of the default state (one state per revision)", default="")
    parser.addini("sqlrs_alembic_to", "Last Alembic revision to apply (default: every head)", default="")
    parser.addini("sqlrs_exec", "Command that builds the default state (DATABASE_URL, PG* set)", type="args",
                  default=[])
    parser.addini("sqlrs_inputs", "Globs of the files sqlrs_exec reads (their content keys the state)",
                  type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlrs(files=None, sql=None, variables=None, psql_args=None, single_transaction=False, pool=None, "
        "alembic=None, to=None, exec=None, inputs=None): "
        "the state the test's sqlrs instance starts from (paths relative to the test file)",
    )
    config.stash[SESSION_KEY] = SqlrsSession(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    sqlrs_session = session.config.stash.get(SESSION_KEY, None)
    if sqlrs_session is not None:
        sqlrs_session.finish()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what a worker measured and kept."""
    sqlrs_session = node.config.stash.get(SESSION_KEY, None)
    output = getattr(node, "workeroutput", {}) or {}
    if sqlrs_session is not None and "sqlrs" in output:
        sqlrs_session.merge(json.loads(output["sqlrs"]))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    sqlrs_session = config.stash.get(SESSION_KEY, None)
    if sqlrs_session is not None:
        for line in sqlrs_session.summary_lines():
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                           pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    sqlrs_session = item.config.stash.get(SESSION_KEY, None)
    if report.failed and sqlrs_session is not None and sqlrs_session.keep_failed:
        for instance in item.stash.get(INSTANCES_KEY, []):
            report.sections.append(("sqlrs", f"kept instance {instance.id} of this failed test: {instance.dsn}\n"
                                             f"(remove it with: sqlrs rm {instance.id})"))
    return report


def _failed(node: pytest.Item) -> bool:
    return any(report.failed for report in node.stash.get(REPORTS_KEY, {}).values())


# -- the session -------------------------------------------------------------------------------------
class Spec:
    """A chain of steps, as the client's build() takes it, and the pool size its state wants."""

    def __init__(self, files: list[str], sql: list[str], variables: dict[str, Any], psql_args: list[str],
                 single_transaction: bool, pool: int, base_dir: Path, host: dict[str, Any] | None = None):
        self.files, self.sql, self.variables = files, sql, variables
        self.psql_args, self.single_transaction, self.pool, self.base_dir = (psql_args, single_transaction, pool,
                                                                              base_dir)
        self.host = host or {}  # alembic=/to= or exec=/inputs= for Client.build

    def key(self) -> str:
        return json.dumps([self.files, self.sql, sorted(self.variables.items()), self.psql_args,
                           self.single_transaction, str(self.base_dir), sorted(self.host.items())], default=str)

    def empty(self) -> bool:
        return not (self.files or self.sql or self.psql_args or self.host)


def _host_inputs(alembic: Any, to: Any, command: Any, inputs: Any, base: Path) -> tuple[dict[str, Any], Path]:
    """Client.build's arguments for the other input kinds, and the directory they run in."""
    if alembic:
        config = _resolve(os.fspath(alembic), base)
        return {"alembic": config, "to": to or None}, Path(config).parent
    if command:
        return {"exec": command if isinstance(command, str) else list(command),
                "inputs": [inputs] if isinstance(inputs, str) else list(inputs or [])}, base
    return {}, base


def _resolve(path: str, base: Path) -> str:
    expanded = os.path.expanduser(os.path.expandvars(path))
    return str(Path(expanded) if os.path.isabs(expanded) else (base / expanded).resolve())


class SqlrsSession:
    """Per-process state of the plugin: the client, built states, pools held, measurements."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.worker = getattr(config, "workerinput", {}).get("workerid", "main")
        run_id = getattr(config, "workerinput", {}).get("testrunuid") or uuid.uuid4().hex[:12]
        self.holder = f"pytest-{run_id}-{self.worker}"
        self._client: Client | None = None
        self._states: dict[str, State] = {}
        self._state_locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()
        self._pools: set[str] = set()
        self._removals: list[Future[Any]] = []
        self._remover: ThreadPoolExecutor | None = None
        self.waits: list[dict[str, Any]] = []
        self.prepares: list[dict[str, Any]] = []
        self.kept: list[dict[str, Any]] = []
        self.errors: list[str] = []

    # settings -----------------------------------------------------------------------------------
    def _opt(self, name: str, ini: str) -> Any:
        value = self.config.getoption(name)
        return value if value is not None else self.config.getini(ini)

    @property
    def keep_failed(self) -> bool:
        return bool(self._opt("sqlrs_keep_failed", "sqlrs_keep_failed"))

    @property
    def ttl(self) -> int:
        return int(self._opt("sqlrs_ttl", "sqlrs_ttl") or 0)

    @property
    def pool_size(self) -> int:
        return int(self._opt("sqlrs_pool", "sqlrs_pool_size") or 0)

    @property
    def ini_dir(self) -> Path:
        inipath = self.config.inipath
        return inipath.parent if inipath is not None else self.config.rootpath

    @property
    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                from sqlrs.client import Client

                state_dir = self._opt("sqlrs_state_dir", "sqlrs_state_dir") or None
                self._client = Client(
                    _resolve(state_dir, self.ini_dir) if state_dir else None,
                    runtime=self._opt("sqlrs_runtime", "sqlrs_runtime") or None,
                    image=self._opt("sqlrs_image", "sqlrs_image") or None,
                    base_dir=self.ini_dir,
                    allow_outside=bool(self.config.getini("sqlrs_allow_outside")),
                )
            return self._client

    # states -------------------------------------------------------------------------------------
    def spec_for(self, node: pytest.Item | pytest.Collector) -> Spec:
        marker = node.get_closest_marker("sqlrs")
        pool = self.pool_size
        if marker is not None:
            kwargs = dict(marker.kwargs)
            unknown = set(kwargs) - {"files", "sql", "variables", "psql_args", "single_transaction", "pool",
                                     "alembic", "to", "exec", "inputs"}
            if unknown or marker.args:
                raise pytest.UsageError(f"@pytest.mark.sqlrs takes keyword arguments files, sql, variables, "
                                        f"psql_args, single_transaction, pool, alembic, to, exec, inputs; "
                                        f"got {sorted(unknown) or marker.args}")
            host, base = _host_inputs(kwargs.get("alembic"), kwargs.get("to"), kwargs.get("exec"),
                                      kwargs.get("inputs"), Path(str(node.path)).parent)
            files = kwargs.get("files") or []
            sql = kwargs.get("sql") or []
            spec = Spec(
                files=[_resolve(os.fspath(f), base) for f in ([files] if isinstance(files, str) else files)],
                sql=[sql] if isinstance(sql, str) else list(sql), variables=dict(kwargs.get("variables") or {}),
                psql_args=list(kwargs.get("psql_args") or []),
                single_transaction=bool(kwargs.get("single_transaction", False)),
                pool=int(kwargs["pool"]) if kwargs.get("pool") is not None else pool, base_dir=base, host=host,
            )
        else:
            files = self.config.getoption("sqlrs_file") or self.config.getini("sqlrs_files")
            args = self.config.getoption("sqlrs_psql_args")
            host, base = _host_inputs(self.config.getini("sqlrs_alembic"), self.config.getini("sqlrs_alembic_to"),
                                      self.config.getini("sqlrs_exec"), self.config.getini("sqlrs_inputs"),
                                      self.ini_dir)
            spec = Spec(
                files=[_resolve(f, self.ini_dir) for f in files], sql=list(self.config.getini("sqlrs_sql")),
                variables={}, psql_args=shlex.split(args) if args is not None else list(
                    self.config.getini("sqlrs_psql_args")),
                single_transaction=False, pool=pool, base_dir=base, host=host,
            )
        if spec.empty():
            raise pytest.UsageError(
                "sqlrs: no state to start instances from: mark the test with @pytest.mark.sqlrs(files=[...]) "
                "or set sqlrs_files (ini) / --sqlrs-file (or sqlrs_alembic / sqlrs_exec)")
        return spec

    def state(self, spec: Spec) -> State:
        key = spec.key()
        with self._lock:
            lock = self._state_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._states:
                from sqlrs.client import Client

                started = time.perf_counter()
                client = self.client
                if spec.base_dir != client.base_dir:
                    client = Client(client.state_dir, runtime=client.runtime, image=client.image,
                                    base_dir=spec.base_dir, workspace=client.workspace_root or self.ini_dir,
                                    allow_outside=client.allow_outside)
                state = client.build(spec.files, sql=spec.sql, variables=spec.variables, psql_args=spec.psql_args,
                                     single_transaction=spec.single_transaction, **spec.host)
                built = time.perf_counter() - started
                pooled_in = 0.0
                if spec.pool > 0:
                    started = time.perf_counter()
                    self.client.set_pool(state, spec.pool, holder=self.holder,
                                         wait_ready=PREFILL_TIMEOUT if self.config.getini("sqlrs_pool_prefill")
                                         else 0.0)
                    self._pools.add(state.id)
                    pooled_in = time.perf_counter() - started
                self.prepares.append({"state_id": state.id, "worker": self.worker, "build_seconds": round(built, 4),
                                      "pool_size": spec.pool, "pool_fill_seconds": round(pooled_in, 4)})
                self._states[key] = state
            return self._states[key]

    # instances ----------------------------------------------------------------------------------
    def instance(self, node: pytest.Item | pytest.Collector, spec: Spec) -> Instance:
        state = self.state(spec)
        started = time.perf_counter()
        instance = self.client.create_instance(state, pool=spec.pool > 0, ttl=self.ttl)
        waited = time.perf_counter() - started
        self.waits.append({"test": node.nodeid, "worker": self.worker, "wait_seconds": round(waited, 5),
                           "from_pool": instance.from_pool, "engine_seconds": instance.engine_seconds})
        return instance

    def done(self, node: pytest.Item | pytest.Collector, instance: Instance, failed: bool) -> None:
        if failed and self.keep_failed:
            try:
                instance.keep()
            except Exception as exc:
                self.errors.append(f"cannot keep instance {instance.id}: {exc}")
            self.kept.append({"test": node.nodeid, "id": instance.id, "dsn": instance.dsn})
            return
        client = self.client
        with self._lock:
            if self._remover is None:
                self._remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlrs-remove")
            self._removals.append(self._remover.submit(client.remove, instance))

    def finish(self) -> None:
        """End of this process's session: wait for removals, leave pools, publish measurements."""
        if self._remover is not None:
            for removal in self._removals:
                try:
                    removal.result(timeout=300)
                except Exception as exc:
                    self.errors.append(f"cannot remove an instance: {exc}")
            self._remover.shutdown(wait=True)
        for state_id in sorted(self._pools):
            try:
                self.client.release_pool(state_id, holder=self.holder)
            except Exception as exc:
                self.errors.append(f"cannot release the pool of {state_id[:12]}: {exc}")
        self._pools.clear()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["sqlrs"] = json.dumps(self.data())
        elif self.config.getoption("sqlrs_report") and (self.waits or self.prepares):
            Path(self.config.getoption("sqlrs_report")).write_text(json.dumps(self.data(), indent=2))

    def data(self) -> dict[str, Any]:
        return {"waits": self.waits, "prepares": self.prepares, "kept": self.kept, "errors": self.errors}

    def merge(self, data: dict[str, Any]) -> None:
        self.waits += data.get("waits", [])
        self.prepares += data.get("prepares", [])
        self.kept += data.get("kept", [])
        self.errors += data.get("errors", [])
        report = self.config.getoption("sqlrs_report")
        if report:
            Path(report).write_text(json.dumps(self.data(), indent=2))

    def summary_lines(self) -> list[str]:
        if not (self.waits or self.kept or self.errors):
            return []
        lines = []
        if self.waits:
            waits = sorted(w["wait_seconds"] * 1000 for w in self.waits)
            pooled = sum(1 for w in self.waits if w["from_pool"])
            p90 = waits[min(len(waits) - 1, round(0.9 * (len(waits) - 1)))]
            lines.append(f"sqlrs: {len(waits)} instance(s), {pooled} from the warm pool; wait for a fresh instance: "
                         f"median {statistics.median(waits):.1f} ms, p90 {p90:.1f} ms, max {waits[-1]:.1f} ms")
        for prepared in self.prepares:
            lines.append(f"sqlrs: state {prepared['state_id'][:12]} ready in {prepared['build_seconds']:.2f} s "
                         f"({prepared['worker']})" + (f", pool of {prepared['pool_size']} filled in "
                                                      f"{prepared['pool_fill_seconds']:.2f} s"
                                                      if prepared["pool_size"] else ""))
        for kept in self.kept:
            lines.append(f"sqlrs: kept instance {kept['id']} of failed {kept['test']}: {kept['dsn']}")
        lines += [f"sqlrs: warning: {error}" for error in self.errors]
        return lines


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlrs_client(pytestconfig: pytest.Config) -> Client:
    """The session's sqlrs.Client (engine found or spawned on first use)."""
    return pytestconfig.stash[SESSION_KEY].client


@pytest.fixture
def sqlrs_state(request: pytest.FixtureRequest) -> State:
    """The state of this test (marker or configuration), built once per session."""
    session = request.config.stash[SESSION_KEY]
    return session.state(session.spec_for(request.node))


@pytest.fixture
def sqlrs_instance(request: pytest.FixtureRequest) -> Iterator[Instance]:
    """A fresh instance of the test's state, removed after the test (kept with --sqlrs-keep-failed)."""
    session: SqlrsSession = request.config.stash[SESSION_KEY]
    node = request.node
    instance = session.instance(node, session.spec_for(node))
    node.stash.setdefault(INSTANCES_KEY, []).append(instance)
    try:
        yield instance
    finally:
        session.done(node, instance, _failed(node))


@pytest.fixture
def sqlrs_dsn(sqlrs_instance: Instance) -> str:
    """The DSN of the test's fresh instance."""
    return sqlrs_instance.dsn


@pytest.fixture(scope="module")
def sqlrs_module_instance(request: pytest.FixtureRequest) -> Iterator[Instance]:
    """One instance for all tests of a module (state: the module's marker or the configuration)."""
    session: SqlrsSession = request.config.stash[SESSION_KEY]
    module = request.node
    instance = session.instance(module, session.spec_for(module))
    try:
        yield instance
    finally:
        failed = any(_failed(item) for item in request.session.items  # a test that used it failed
                     if item.path == module.path and "sqlrs_module_instance" in getattr(item, "fixturenames", ())
                     and REPORTS_KEY in item.stash)
        session.done(module, instance, failed)
