"""The pytest plugin's per-process session (sqlrs/entrypoints/pytest/plugin.py has the hooks and fixtures):
the client, the states built (once per session, failures remembered), the warm pools held, the
engine session that tells it when this process's run of claims begins and ends, the instances
handed out and removed, and what was measured for the terminal summary."""

from __future__ import annotations

import json
import os
import shlex
import statistics
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.entrypoints.library.client import Client, Instance, State

PREFILL_TIMEOUT = 300.0


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
        self._build_errors: dict[str, str] = {}  # spec key -> why its state could not be built
        self._state_locks: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()
        self._pools: set[str] = set()
        self._session_open = False  # the engine was told this process's run of claims began
        self._removals: list[Future[Any]] = []
        self._remover: ThreadPoolExecutor | None = None
        self.waits: list[dict[str, Any]] = []
        self.prepares: list[dict[str, Any]] = []
        self.kept: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._kind: str | None = None
        self.kind_choice: str | None = None  # how `auto` chose, for the summary
        self._server_only: set[str] = set()  # states a database instance cannot copy (several databases)

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
    def instance_kind(self) -> str:
        """The kind of instance tests get: `auto` takes database instances on a store without
        copy-on-write (copy), where a server instance costs a full copy of the data directory, and
        server instances on copy-on-write stores, where they are as fast and isolate more."""
        with self._lock:
            if self._kind is None:
                wanted = str(self._opt("sqlrs_instance_kind", "sqlrs_instance_kind") or "auto")
                if wanted not in ("auto", "server", "database"):
                    raise pytest.UsageError(f"sqlrs_instance_kind takes auto, server or database, not {wanted!r}")
                if wanted == "auto":
                    wanted = self.client.default_instance_kind()
                    backend = self.client.status().get("snapshot", {}).get("backend")
                    self.kind_choice = f"sqlrs_instance_kind = auto on the {backend!r} snapshot store"
                self._kind = wanted
            return self._kind

    @property
    def postgres_version(self) -> str | None:
        """--sqlrs-postgres-version, else SQLRS_POSTGRES_VERSION, else the sqlrs_postgres_version ini
        option; None: the client takes the workspace's postgres.version (sqlrs.engine_client.workspace)."""
        from sqlrs.engine_client.errors import ClientError
        from sqlrs.engine_client.workspace import choose_postgres_version

        try:
            return choose_postgres_version(None, self.config.getoption("sqlrs_postgres_version"),
                                           self.config.getini("sqlrs_postgres_version") or None)
        except ClientError as exc:
            raise pytest.UsageError(exc.message) from None

    @property
    def ini_dir(self) -> Path:
        inipath = self.config.inipath
        return inipath.parent if inipath is not None else self.config.rootpath

    @property
    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                from sqlrs.entrypoints.library.client import Client

                state_dir = self._opt("sqlrs_state_dir", "sqlrs_state_dir") or None
                self._client = Client(
                    _resolve(state_dir, self.ini_dir) if state_dir else None,
                    runtime=self._opt("sqlrs_runtime", "sqlrs_runtime") or None,
                    image=self._opt("sqlrs_image", "sqlrs_image") or None,
                    base_dir=self.ini_dir,
                    allow_outside=bool(self.config.getini("sqlrs_allow_outside")),
                    postgres_version=self.postgres_version,
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
            if key in self._build_errors:  # failed before: the same short error, no new job
                pytest.fail(self._build_errors[key], pytrace=False)
            if key not in self._states:
                started = time.perf_counter()
                state = self._build(key, spec)
                built = time.perf_counter() - started
                self._begin_session(state)
                pooled_in: float | None = None
                if spec.pool > 0 and self.instance_kind == "server":  # database instances are copied ahead
                    started = time.perf_counter()
                    # recorded before asking: interrupted while the engine answers, finish() still leaves it
                    self._pools.add(state.id)
                    prefill = bool(self.config.getini("sqlrs_pool_prefill"))
                    self.client.set_pool(state, spec.pool, holder=self.holder,
                                         wait_ready=PREFILL_TIMEOUT if prefill else 0.0)
                    pooled_in = round(time.perf_counter() - started, 4) if prefill else None
                self.prepares.append({"state_id": state.id, "worker": self.worker, "build_seconds": round(built, 4),
                                      "pool_size": spec.pool, "pool_fill_seconds": pooled_in})
                self._states[key] = state
            return self._states[key]

    def _begin_session(self, state: State) -> None:
        """Tell the engine this process's tests begin taking instances of `state`: it keeps spares
        at the run's demand until `finish` ends the session (or this process is gone)."""
        self._session_open = True  # recorded first: interrupted while the engine answers, finish() ends it
        try:
            self.client.begin_session(state, self.holder)
        except Exception as exc:  # the spares are an optimisation: the tests still get their instances
            self.errors.append(f"cannot begin a session on {state.id[:12]}: {exc}")

    def _build(self, key: str, spec: Spec) -> State:
        from sqlrs.entrypoints.library.client import Client, Error

        client = self.client
        if spec.base_dir != client.base_dir:
            client = Client(client.state_dir, runtime=client.runtime, image=client.image,
                            base_dir=spec.base_dir, workspace=client.workspace_root or self.ini_dir,
                            allow_outside=client.allow_outside, postgres_version=client.postgres_version)
        try:
            return client.build(spec.files, sql=spec.sql, variables=spec.variables, psql_args=spec.psql_args,
                                single_transaction=spec.single_transaction, **spec.host)
        except Error as exc:
            self._build_errors[key] = build_error_message(exc)
        pytest.fail(self._build_errors[key], pytrace=False)

    # instances ----------------------------------------------------------------------------------
    def instance(self, node: pytest.Item | pytest.Collector, spec: Spec) -> Instance:
        state = self.state(spec)
        started = time.perf_counter()
        kind = "server" if state.id in self._server_only else self.instance_kind
        try:
            instance = self.client.create_instance(state, pool=spec.pool > 0 and kind == "server", ttl=self.ttl,
                                                   kind=kind)
        except Exception as exc:
            from sqlrs.entrypoints.library.client import UsageError

            if kind != "database" or not isinstance(exc, UsageError) or "holds databases" not in exc.message:
                raise
            self._server_only.add(state.id)  # auto or not: this state needs server instances
            instance = self.client.create_instance(state, pool=spec.pool > 0, ttl=self.ttl)
        waited = time.perf_counter() - started
        self.waits.append({"test": node.nodeid, "worker": self.worker, "wait_seconds": round(waited, 5),
                           "kind": instance.kind, "from_pool": instance.from_pool,
                           "engine_seconds": instance.engine_seconds})
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
        """End of this process's session: leave pools, wait for removals, publish measurements."""
        # leaving a pool answers at once (the engine drains it in the background), so leave first:
        # the drain overlaps with the last removals instead of following them
        for state_id in sorted(self._pools):
            try:
                self.client.release_pool(state_id, holder=self.holder)
            except Exception as exc:
                self.errors.append(f"cannot release the pool of {state_id[:12]}: {exc}")
        self._pools.clear()
        if self._remover is not None:
            for removal in self._removals:
                try:
                    removal.result(timeout=300)
                except Exception as exc:
                    self.errors.append(f"cannot remove an instance: {exc}")
            self._remover.shutdown(wait=True)
        if self._session_open:  # after the removals: the spares follow the run until its very end
            self._session_open = False
            try:
                self.client.end_session(self.holder)
            except Exception as exc:
                self.errors.append(f"cannot end the session: {exc}")
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["sqlrs"] = json.dumps(self.data())
        elif self.config.getoption("sqlrs_report") and (self.waits or self.prepares):
            Path(self.config.getoption("sqlrs_report")).write_text(json.dumps(self.data(), indent=2))

    def data(self) -> dict[str, Any]:
        return {"waits": self.waits, "prepares": self.prepares, "kept": self.kept, "errors": self.errors,
                "kind_choice": self.kind_choice}

    def merge(self, data: dict[str, Any]) -> None:
        self.kind_choice = self.kind_choice or data.get("kind_choice")
        self.waits += data.get("waits", [])
        self.prepares += data.get("prepares", [])
        self.kept += data.get("kept", [])
        self.errors += data.get("errors", [])
        report = self.config.getoption("sqlrs_report")
        if report:
            Path(report).write_text(json.dumps(self.data(), indent=2))

    def summary_lines(self) -> list[str]:
        if not (self.waits or self.prepares or self.kept or self.errors):
            return []
        lines = []
        if self.waits:
            waits = sorted(w["wait_seconds"] * 1000 for w in self.waits)
            p90 = waits[min(len(waits) - 1, round(0.9 * (len(waits) - 1)))]
            lines.append(f"sqlrs: {len(waits)} instance(s): {'; '.join(self._what_was_used())}; wait for one: "
                         f"median {statistics.median(waits):.1f} ms, p90 {p90:.1f} ms, max {waits[-1]:.1f} ms")
            if self.kind_choice:
                lines.append(f"sqlrs: instance kind chosen by {self.kind_choice} (docs/python-api.md, "
                             "\"Which instance a test gets\")")
        for prepared in self.prepares:
            pool = ""
            if prepared["pool_size"] and prepared.get("pool_fill_seconds") is not None:
                pool = f", pool of {prepared['pool_size']} filled in {prepared['pool_fill_seconds']:.2f} s"
            elif prepared["pool_size"]:
                pool = f", pool of {prepared['pool_size']} filling while tests run"
            lines.append(f"sqlrs: state {prepared['state_id'][:12]} ready in {prepared['build_seconds']:.2f} s "
                         f"({prepared['worker']}){pool}")
        for kept in self.kept:
            lines.append(f"sqlrs: kept instance {kept['id']} of failed {kept['test']}: {kept['dsn']}")
        lines += [f"sqlrs: warning: {error}" for error in self.errors]
        return lines


    def _what_was_used(self) -> list[str]:
        """Per instance kind, what the tests got and how much of it was ready before they asked."""
        parts = []
        databases = [w for w in self.waits if w.get("kind") == "database"]
        servers = [w for w in self.waits if w.get("kind") != "database"]
        if databases:
            ahead = sum(1 for w in databases if w["from_pool"])
            parts.append(f"{len(databases)} database(s) of their own in the state's shared server, "
                         f"{ahead} copied ahead, {len(databases) - ahead} copied on demand")
        if servers:
            warm = sum(1 for w in servers if w["from_pool"])
            parts.append(f"{len(servers)} server(s) of their own, {warm} warm (started ahead), "
                         f"{len(servers) - warm} started on demand")
        return parts


def build_error_message(exc: Exception) -> str:
    """What a test whose state cannot be built reports: sqlrs's one-line error, then the lines
    under it (`LINE n:` and the caret, DETAIL, HINT, the statement of a host step), then the hint."""
    return f"sqlrs: cannot build the test's state: {exc}"


# where the plugin keeps the process's session (on pytest's config; the Django fixtures read it too)
SESSION_KEY = pytest.StashKey[SqlrsSession]()
