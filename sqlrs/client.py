"""sqlrs as a Python library: prepare states, get instances, run psql/pgbench, clean up.

    import sqlrs

    client = sqlrs.Client()                       # finds (or spawns) the engine, like the CLI
    with client.instance(files=["schema.sql", "seed.sql"]) as db:
        print(db.dsn)                             # postgresql://sqlrs:...@127.0.0.1:PORT/postgres
        db.psql("-c", "select count(*) from users").check()
    # the instance is removed here, whatever happened inside the block

The client speaks the engine's HTTP API with the standard library (the CLI's own client and
psql argument reader are reused, so files and includes are read exactly as `sqlrs prepare:psql`
reads them). Nothing of the engine is imported. See docs/python-api.md.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlrs.entrypoints.cli.errors import EXIT_ENGINE, EXIT_NOT_FOUND, EXIT_USAGE, CliError

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

    from sqlrs.entrypoints.cli.client import EngineClient
    from sqlrs.entrypoints.cli.psqlargs import Workspace

__all__ = [
    "Client",
    "EngineUnavailable",
    "Error",
    "Instance",
    "NotFoundError",
    "OperationFailed",
    "RunResult",
    "State",
    "UsageError",
]

StrPath = str | os.PathLike[str]
Seconds = int | float | timedelta
NDJSON = "application/x-ndjson"


# -- errors ------------------------------------------------------------------------------------------
class Error(Exception):
    """Anything sqlrs refused or failed to do. `exit_code` is what the CLI would exit with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


class UsageError(Error):
    """Bad arguments: a missing file, a connection flag, an unknown option (CLI exit 2)."""

    exit_code = EXIT_USAGE


class EngineUnavailable(Error):
    """The engine could not be reached, started, or is of another major version (CLI exit 3)."""

    exit_code = EXIT_ENGINE


class NotFoundError(Error):
    """No such instance, state or pool (CLI exit 4)."""

    exit_code = EXIT_NOT_FOUND


class OperationFailed(Error):
    """The engine tried and failed: a SQL step failed (details name the file and line), a server
    did not start, a tool exited non-zero when asked to `check()` (CLI exit 1)."""


def _convert(error: CliError) -> Error:
    kind: type[Error] = {EXIT_USAGE: UsageError, EXIT_ENGINE: EngineUnavailable,
                         EXIT_NOT_FOUND: NotFoundError}.get(error.exit_code, OperationFailed)
    return kind(error.message, error.hint, error.details)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except CliError as exc:
        raise _convert(exc) from None


def _owner() -> dict[str, int] | None:
    """This process as the owner of what it creates (the engine removes it once we are gone)."""
    from sqlrs.adapters.procfs import own_identity

    identity = own_identity()
    return None if identity is None else {"pid": identity[0], "started": identity[1]}


def _seconds(value: Seconds | None) -> int | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise UsageError("a TTL must not be negative")
    return round(seconds)


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """A cached state: the result of a chain of steps, ready to start instances from."""

    id: str
    runtime: str
    image: str | None = None

    def __str__(self) -> str:
        return self.id


@dataclass
class RunResult:
    """What `psql`/`pgbench` printed and how it exited."""

    exit_code: int
    stdout: str
    stderr: str
    error: str | None = None  # the engine's message when it could not run the tool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> RunResult:
        """Return self, or raise OperationFailed with the tool's stderr when it failed."""
        if self.exit_code != 0:
            raise OperationFailed(self.error or f"exited with {self.exit_code}: {self.stderr.strip()}",
                                  details={"exit_code": self.exit_code, "stdout": self.stdout,
                                           "stderr": self.stderr})
        return self


@dataclass
class Instance:
    """A running PostgreSQL server started from a state: connect with `dsn` (or `connect()`).

    Usable as a context manager: the instance is removed when the block ends.
    """

    id: str
    state_id: str
    dsn: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    runtime: str
    name: str | None = None
    ttl_seconds: int = 0
    expires_in_seconds: float | None = None
    connections: int | None = None
    pooled: bool = False
    from_pool: bool = False  # handed out by a warm pool (set by Client.create_instance)
    kind: str = "server"  # "server": a server of its own; "database": a database in a shared server
    engine_seconds: float | None = None  # how long the engine took to hand it out
    client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], client: Client | None = None) -> Instance:
        return cls(
            id=str(data["id"]), state_id=str(data["state_id"]), dsn=str(data["dsn"]),
            host=str(data.get("host", "127.0.0.1")), port=int(data.get("port", 0)),
            user=str(data.get("user", "")), password=str(data.get("password", "")),
            dbname=str(data.get("dbname", "postgres")), runtime=str(data.get("runtime", "")),
            name=data.get("name"), ttl_seconds=int(data.get("ttl_seconds") or 0),
            expires_in_seconds=data.get("expires_in_seconds"), connections=data.get("connections"),
            pooled=bool(data.get("pooled", False)), from_pool=bool(data.get("from_pool", False)),
            engine_seconds=data.get("seconds"), kind=str(data.get("kind", "server")), client=client,
        )

    # connection facts ---------------------------------------------------------------------------
    @property
    def conninfo(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect / asyncpg.connect and friends."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "dbname": self.dbname}

    @property
    def env(self) -> dict[str, str]:
        """libpq environment variables (PGHOST, PGPORT, ...) for tools run as subprocesses."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password,
                "PGDATABASE": self.dbname}

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg 3 connection to the instance (keyword arguments go to psycopg.connect)."""
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)

    # operations ---------------------------------------------------------------------------------
    def _client(self) -> Client:
        if self.client is None:
            raise UsageError("this Instance is not attached to a Client")
        return self.client

    def psql(self, *args: str, input: str | None = None, on_output: OutputCallback | None = None) -> RunResult:
        """Run psql against the instance inside sqlrs (`-c SQL`, `-f FILE`, `-v`, ...)."""
        return self._client().run_psql(self, *args, input=input, on_output=on_output)

    def pgbench(self, *args: str, on_output: OutputCallback | None = None) -> RunResult:
        return self._client().run_pgbench(self, *args, on_output=on_output)

    def set_ttl(self, ttl: Seconds) -> Instance:
        """Change the idle TTL (0: keep until removed); returns the refreshed instance."""
        return self._client().set_ttl(self, ttl)

    def keep(self) -> Instance:
        """Keep the instance until someone removes it (drops its TTL, and it no longer goes away
        with this process)."""
        return self._client().keep(self)

    def refresh(self) -> Instance:
        return self._client().get_instance(self.id)

    def remove(self) -> bool:
        """Stop and delete the instance; False when it was already gone."""
        return self._client().remove(self)

    def snapshot(self, name: str | None = None) -> State:
        """Save the instance's current data as a new state (it keeps running); see Client.snapshot."""
        return self._client().snapshot(self, name=name)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


OutputCallback = Callable[[str, str], None]  # (stream "stdout"|"stderr", text)


class _Ctx:
    """What the CLI's job watcher needs of its caller."""

    def __init__(self, client: Client):
        self._client = client

    def client(self) -> EngineClient:
        return self._client.engine


def _git_root(directory: Path) -> Path:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


# -- the client --------------------------------------------------------------------------------------
class Client:
    """A connection to the sqlrs engine serving `state_dir` (spawned on first use when needed).

    `runtime` / `image` apply to everything this client prepares. Relative file names are resolved
    against `base_dir` (default: the current directory when a call is made), like the CLI resolves
    them against its cwd; nothing outside the workspace root (the git root of `base_dir`, or
    `workspace` when given) is read unless `allow_outside=True`.
    Thread-safe: every request uses its own connection.
    """

    def __init__(
        self,
        state_dir: StrPath | None = None,
        *,
        runtime: str | None = None,
        image: str | None = None,
        base_dir: StrPath | None = None,
        workspace: StrPath | None = None,
        allow_outside: bool = False,
        spawn: bool = True,
    ):
        if runtime not in (None, "auto", "docker", "podman", "native"):
            raise UsageError(f"unknown runtime {runtime!r}", hint="auto, docker, podman or native")
        self._state_dir = Path(state_dir).absolute() if state_dir is not None else None
        self.runtime = runtime
        self.image = image
        self.base_dir = Path(base_dir).absolute() if base_dir is not None else None
        self.workspace_root = Path(workspace).absolute() if workspace is not None else None
        self.allow_outside = allow_outside
        self.spawn = spawn
        self._engine: EngineClient | None = None
        self._lock = threading.Lock()

    # plumbing -----------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir

            self._state_dir = default_state_dir()
        return self._state_dir

    @property
    def engine(self) -> EngineClient:
        """The CLI's HTTP client for the engine (found or spawned on first use)."""
        with self._lock:
            if self._engine is None:
                from sqlrs.entrypoints.cli.client import connect

                with _translated():
                    self._engine = connect(self.state_dir, spawn=self.spawn)
            return self._engine

    def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = 300.0) -> Any:
        """One JSON request to the engine API (see the OpenAPI document); errors raise Error."""
        with _translated():
            return self.engine.call(method, path, body, timeout=timeout)

    def _workspace(self) -> Workspace:
        from sqlrs.entrypoints.cli.psqlargs import Workspace

        cwd = self.base_dir or Path.cwd()
        return Workspace(cwd=cwd, root=self.workspace_root or _git_root(cwd), allow_outside=self.allow_outside)

    def close(self) -> None:
        """Forget the engine connection (nothing is held open between requests)."""
        with self._lock:
            self._engine = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # chains -------------------------------------------------------------------------------------
    def _chain(self, files: Iterable[StrPath] | StrPath, sql: Iterable[str] | str,
               variables: Mapping[str, Any] | None, single_transaction: bool,
               psql_args: Sequence[str], from_state: State | str | None = None) -> dict[str, Any]:
        """The request body's steps and options, read exactly as `sqlrs prepare:psql` reads them.

        Steps run in this order: `psql_args` (psql syntax: -f, -c, -v, -1), then `files`, then `sql`.
        With `from_state` the chain starts from that state instead of the base, and may be empty.
        """
        from sqlrs.entrypoints.cli.psqlargs import parse_prepare_args

        args = list(psql_args)
        if isinstance(files, str | os.PathLike):
            files = [files]
        if isinstance(sql, str):
            sql = [sql]
        for path in files:
            args += ["-f", os.fspath(path)]
        for statement in sql:
            args += ["-c", statement]
        for name, value in (variables or {}).items():
            args += ["-v", f"{name}={value}"]
        if single_transaction:
            args.append("-1")
        if any(arg == "-" for arg in args):
            raise UsageError("stdin (-f -) cannot be a step of a library call", hint="pass sql=[...] instead")
        with _translated():
            parsed = parse_prepare_args(args, self._workspace())
        if not parsed.steps and from_state is None:
            raise UsageError("nothing to prepare", hint="give files=[...] or sql=[...]")
        body: dict[str, Any] = {
            "steps": parsed.steps,
            "options": {"variables": [list(v) for v in parsed.variables],
                        "single_transaction": parsed.single_transaction},
            "runtime": self.runtime, "image": self.image,
        }
        if from_state is not None:
            body["from_state"] = str(from_state)
            if isinstance(from_state, State):
                body["runtime"] = self.runtime if self.runtime not in (None, "auto") else from_state.runtime or None
                body["image"] = from_state.image or self.image
        return body

    def _host_chain(self, alembic: StrPath | None, to: str | None, exec: Sequence[str] | str | None,
                    inputs: Iterable[str] | str, psql: bool) -> dict[str, Any] | None:
        """The request body for the other input kinds (`alembic=`, `exec=`), None for psql's.

        Alembic and commands run in `base_dir` (default: the current directory), with this
        process's Python and environment, as `sqlrs prepare:alembic` / `prepare:exec` do.
        """
        if alembic is None and exec is None:
            if to is not None or inputs:
                raise UsageError("to= goes with alembic=, inputs= with exec=")
            return None
        if psql or (alembic is not None and exec is not None):
            raise UsageError("give one input kind per chain: files/sql/psql_args, alembic= or exec=")
        from sqlrs.entrypoints.cli.hostinputs import alembic_steps, exec_steps

        cwd = self.base_dir or Path.cwd()
        with _translated():
            if alembic is not None:
                if inputs:
                    raise UsageError("inputs= goes with exec=")
                steps = alembic_steps(os.fspath(alembic), to, cwd)
            else:
                if to is not None:
                    raise UsageError("to= goes with alembic=")
                command = [exec] if isinstance(exec, str) else list(exec or [])
                steps = exec_steps(command, [inputs] if isinstance(inputs, str) else list(inputs), cwd)
        return {"steps": steps, "runtime": self.runtime, "image": self.image}

    def _liquibase_chain(self, liquibase: Sequence[str] | str, other: bool) -> dict[str, Any]:
        """`liquibase="update --changelog-file=master.xml"` (or its argument list): one state per
        changeset, as `sqlrs prepare:lb -- ARGS` in `base_dir` (default: the current directory)."""
        import shlex

        from sqlrs.entrypoints.cli.lb_cmd import liquibase_steps

        if other:
            raise UsageError("give one input kind per chain: files/sql/psql_args, alembic=, exec= or liquibase=")
        args = shlex.split(liquibase) if isinstance(liquibase, str) else list(liquibase)
        with _translated():
            steps = liquibase_steps(args, self.base_dir or Path.cwd(), self.state_dir / "config.json",
                                    self.allow_outside)
        return {"steps": steps, "runtime": self.runtime, "image": self.image}

    def _body(self, files: Iterable[StrPath] | StrPath, sql: Iterable[str] | str,
              variables: Mapping[str, Any] | None, single_transaction: bool, psql_args: Sequence[str],
              host: Mapping[str, Any], from_state: State | str | None = None) -> dict[str, Any]:
        files = [files] if isinstance(files, str | os.PathLike) else list(files)
        psql = bool(files or sql or psql_args or variables or single_transaction)
        chain: dict[str, Any] | None = None
        if host.get("liquibase") is not None:
            chain = self._liquibase_chain(host["liquibase"], psql or any(
                host.get(k) for k in ("alembic", "to", "exec", "inputs")))
        else:
            chain = self._host_chain(host.get("alembic"), host.get("to"), host.get("exec"),
                                     host.get("inputs") or (), psql)
        if chain is not None and from_state is not None:
            raise UsageError("from_state takes psql steps only here", hint="build the migrations first, then "
                             "add psql steps with from_state")
        return chain if chain is not None else self._chain(files, sql, variables, single_transaction, psql_args,
                                                           from_state)

    def _job(self, body: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        from sqlrs.entrypoints.cli.watching import NoProgress, watch_job

        class Forward(NoProgress):
            def __call__(self, event: dict[str, Any]) -> None:
                if on_event is not None:
                    on_event(event)

        submitted = self.call("POST", "/v1/prepare-jobs", body)
        with _translated():
            return watch_job(_Ctx(self), submitted["job_id"], Forward(), can_prompt=False)

    def plan(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
             variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
             psql_args: Sequence[str] = (), from_state: State | str | None = None,
             alembic: StrPath | None = None, to: str | None = None,
             exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
             liquibase: Sequence[str] | str | None = None) -> list[dict[str, Any]]:
        """The chain's states in order: `index`, `kind`, `source`, `state_id`, `cached`. Builds nothing.
        With `from_state` the first row (kind `state`) is that state instead of the base.

        Other input kinds instead of psql's: `alembic="alembic.ini"` (`to="REV"`: stop there), one
        state per revision; `exec=["cmd", "arg"]` with `inputs=["migrations/**"]`, one state.
        """
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "to": to, "exec": exec, "inputs": inputs, "liquibase": liquibase},
                          from_state)
        result = self._job({**body, "plan_only": True}, None)
        plan: list[dict[str, Any]] = result.get("plan", [])
        return plan

    def build(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
              variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
              psql_args: Sequence[str] = (), on_event: Callable[[dict[str, Any]], None] | None = None,
              from_state: State | str | None = None, alembic: StrPath | None = None, to: str | None = None,
              exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
              liquibase: Sequence[str] | str | None = None) -> State:
        """Build (or find cached) the chain's states; start nothing. Concurrent builds of one chain
        (other processes, xdist workers) build each state once. `from_state`: build on that state
        (e.g. a snapshot) instead of the base.

        Other input kinds instead of psql's: `alembic="alembic.ini"` (`to="REV"`: stop there), one
        state per revision; `exec=["cmd", "arg"]` with `inputs=["migrations/**"]`, one state;
        `liquibase="update --changelog-file=master.xml"`, one state per changeset.
        """
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "to": to, "exec": exec, "inputs": inputs, "liquibase": liquibase},
                          from_state)
        result = self._job({**body, "build_only": True}, on_event)
        return State(id=str(result["state_id"]), runtime=str(result.get("runtime", "")), image=body.get("image"))

    def prepare(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
                variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
                psql_args: Sequence[str] = (), name: str | None = None, ttl: Seconds | None = None,
                on_name: str = "error", on_event: Callable[[dict[str, Any]], None] | None = None,
                from_state: State | str | None = None, alembic: StrPath | None = None, to: str | None = None,
                exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
                liquibase: Sequence[str] | str | None = None) -> Instance:
        """`sqlrs prepare:psql`: build the chain and start an instance of it (not removed for you;
        use `instance()` for that). `ttl`: idle TTL (None: the engine's instance.ttl_seconds).
        `from_state` (`--from`): start the chain from that state (id, prefix or State, e.g. from
        `snapshot()`) instead of the base; with no steps, an instance of that state.
        `alembic=` / `exec=`: as in `build()`."""
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "to": to, "exec": exec, "inputs": inputs, "liquibase": liquibase},
                          from_state)
        body.update(name=name, on_name=on_name)
        ttl_seconds = _seconds(ttl)
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        result = self._job(body, on_event)
        return self.get_instance(str(result["instance_id"]))

    # instances ----------------------------------------------------------------------------------
    def create_instance(self, state: State | str, *, pool: bool = False, ttl: Seconds | None = None,
                        name: str | None = None, owned: bool = True, kind: str = "server") -> Instance:
        """Start an instance of a cached state; with `pool=True` claim a warm spare when the state
        has a pool (see `set_pool`), which takes milliseconds.

        `owned`: the instance belongs to this process; the engine removes it within seconds once
        the process is gone (killed, crashed) unless `keep()` was called. `owned=False`: it stays
        (until removed or its TTL runs out), like the CLI's instances.

        `kind="database"`: a database of its own in the state's shared server (a template copy made
        ahead: milliseconds on any store, but database-level isolation: instances of one state
        share a server, its roles and settings). `kind="server"` (default): a server of its own."""
        body: dict[str, Any] = {"state_id": str(state), "pool": pool, "name": name, "kind": kind,
                                "image": state.image if isinstance(state, State) else self.image}
        if owned:
            body["owner"] = _owner()
        ttl_seconds = _seconds(ttl)
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return Instance.from_json(self.call("POST", "/v1/instances", body), self)

    @contextlib.contextmanager
    def instance(self, files: Iterable[StrPath] | StrPath = (), *, state: State | str | None = None,
                 sql: Iterable[str] | str = (), variables: Mapping[str, Any] | None = None,
                 single_transaction: bool = False, psql_args: Sequence[str] = (), pool: bool = False,
                 ttl: Seconds | None = None, name: str | None = None, keep: bool = False,
                 kind: str = "server", alembic: StrPath | None = None, to: str | None = None,
                 exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
                 liquibase: Sequence[str] | str | None = None) -> Iterator[Instance]:
        """A fresh instance for the `with` block, removed afterwards (unless `keep`), whatever happens.

        Give the chain (`files`, `sql`, ...; or `alembic=`/`exec=`/`liquibase=` as in `build()`; built or found
        cached first) or a `state` from `build()`.
        """
        if state is None:
            state = self.build(files, sql=sql, variables=variables, single_transaction=single_transaction,
                               psql_args=psql_args, alembic=alembic, to=to, exec=exec,
                               inputs=inputs, liquibase=liquibase)
        instance = self.create_instance(state, pool=pool, ttl=ttl, name=name, kind=kind)
        try:
            yield instance
        finally:
            if not keep:
                self.remove(instance)

    def get_instance(self, ref: str) -> Instance:
        """An instance by id, unique id prefix or name."""
        return Instance.from_json(self.call("GET", f"/v1/instances/{ref}"), self)

    def instances(self) -> list[Instance]:
        return [Instance.from_json(item, self) for item in self.call("GET", "/v1/instances")]

    def states(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", "/v1/states")
        return data

    def snapshot(self, instance: Instance | str, name: str | None = None) -> State:
        """`sqlrs snapshot`: save a running instance's current data as a new state, a child of its
        state (kind `snapshot`, never evicted automatically). The instance keeps running and its
        connections stay open. Start instances from it with `prepare(from_state=...)` or
        `create_instance(state)`; remove it with `remove_state`."""
        ref = instance.id if isinstance(instance, Instance) else instance
        body: dict[str, Any] = {"instance": ref}
        if name is not None:
            body["name"] = name
        data = self.call("POST", "/v1/snapshots", body, timeout=None)
        image = self.image
        if image is None and data.get("runtime") in ("docker", "podman"):  # instances of it need its image
            image = self.call("GET", f"/v1/instances/{ref}").get("image")
        return State(id=str(data["id"]), runtime=str(data.get("runtime", "")), image=image)

    def remove_state(self, state: State | str, *, recurse: bool = False) -> bool:
        """Remove a state (idempotent; `recurse`: with the states and instances built on it).
        False when there was nothing to remove."""
        result = self.call("DELETE", f"/v1/states/{state}" + ("?recurse=true" if recurse else ""))
        return not result.get("not_found", False)

    def set_ttl(self, instance: Instance | str, ttl: Seconds) -> Instance:
        ref = instance.id if isinstance(instance, Instance) else instance
        return Instance.from_json(self.call("PATCH", f"/v1/instances/{ref}", {"ttl_seconds": _seconds(ttl)}), self)

    def keep(self, instance: Instance | str) -> Instance:
        """Keep an instance until someone removes it: no TTL, no owner process."""
        ref = instance.id if isinstance(instance, Instance) else instance
        return Instance.from_json(self.call("PATCH", f"/v1/instances/{ref}", {"ttl_seconds": 0, "owner": None}),
                                  self)

    def remove(self, instance: Instance | str) -> bool:
        """Stop and delete an instance (idempotent): False when there was nothing to remove."""
        ref = instance.id if isinstance(instance, Instance) else instance
        result = self.call("DELETE", f"/v1/instances/{ref}?force=true")  # even with clients connected
        return not result.get("not_found", False)

    # tools --------------------------------------------------------------------------------------
    def run_psql(self, instance: Instance | str, *args: str, input: str | None = None,
                 on_output: OutputCallback | None = None) -> RunResult:
        """`sqlrs run:psql`: psql runs where the instance runs; `-f FILE` is read here (with its
        includes), `input` is fed as the script. Returns its output and exit code."""
        return self._run(instance, "psql", args, input, on_output)

    def run_pgbench(self, instance: Instance | str, *args: str, on_output: OutputCallback | None = None) -> RunResult:
        return self._run(instance, "pgbench", args, None, on_output)

    def _run(self, instance: Instance | str, tool: str, args: Sequence[str], input: str | None,
             on_output: OutputCallback | None) -> RunResult:
        from sqlrs.entrypoints.cli.client import raise_engine_error
        from sqlrs.entrypoints.cli.psqlargs import FILE_TOKEN, ScriptReader, parse_run_args

        ref = instance.id if isinstance(instance, Instance) else instance
        workspace = self._workspace()
        with _translated():
            parsed = parse_run_args(list(args), workspace, tool)
        files, tool_args = list(parsed.steps), list(parsed.tool_args)
        if input is not None:
            reader = ScriptReader(workspace)
            reader._add("<input>", input.encode(), None, ())  # follows includes like a script from stdin
            files.append({"kind": "file", "source": "-", "files": reader.files})
            tool_args += ["-f", f"{FILE_TOKEN}{len(files) - 1}"]
        elif tool == "psql" and not parsed.uses_scripts:
            raise UsageError("nothing to run", hint="give -c SQL, -f FILE or input=...")
        body = {"instance": ref, "tool": tool, "args": tool_args, "files": files}
        stdout: list[str] = []
        stderr: list[str] = []
        exit_code, error = 1, None
        with _translated():
            response = self.engine.request("POST", "/v1/runs", body, timeout=None, accept=NDJSON)
            if response.status != 200:
                raise_engine_error(response.status, response.json())
            for item in response.lines():
                if "stream" in item:
                    (stdout if item["stream"] == "stdout" else stderr).append(item["data"])
                    if on_output is not None:
                        on_output(item["stream"], item["data"])
                if "error" in item:
                    error = str(item["error"].get("message", "the engine could not run the tool"))
                if "exit_code" in item:
                    exit_code = int(item["exit_code"])
        return RunResult(exit_code, "".join(stdout), "".join(stderr), error)

    # warm pools ---------------------------------------------------------------------------------
    def set_pool(self, state: State | str, size: int, *, holder: str | None = None,
                 wait_ready: float = 0.0, owned: bool = True) -> dict[str, Any]:
        """Keep `size` started spares of `state` ready for `create_instance(pool=True)`.

        `holder` names the user of the pool (the pool is drained when its last holder calls
        `release_pool`, or, when `owned`, once this process is gone); `wait_ready` waits (seconds)
        until the spares are up.
        """
        body: dict[str, Any] = {"size": size, "holder": holder, "wait_ready": wait_ready,
                                "image": state.image if isinstance(state, State) else self.image}
        if owned and holder:
            body["owner"] = _owner()
        data: dict[str, Any] = self.call("PUT", f"/v1/pools/{state}", body,
                                         timeout=max(300.0, wait_ready + 60))
        return data

    def release_pool(self, state: State | str, holder: str | None = None) -> dict[str, Any]:
        """Leave the pool as `holder` (drained when no holder is left), or drain it. Answers at once:
        the engine removes the spares in the background."""
        query = f"?holder={_quote(holder)}" if holder else ""
        data: dict[str, Any] = self.call("DELETE", f"/v1/pools/{state}{query}")
        return data

    def pools(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", "/v1/pools")
        return data

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", "/v1/status")
        return data


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
