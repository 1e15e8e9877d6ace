"""sqlrs as a Python library: prepare states, get instances, run psql/pgbench, clean up.

    import sqlrs

    client = sqlrs.Client()                       # finds (or spawns) the engine, like the CLI
    with client.instance(files=["schema.sql", "seed.sql"]) as db:
        print(db.dsn)                             # postgresql://sqlrs:...@127.0.0.1:PORT/postgres
        db.psql("-c", "select count(*) from users").check()
    # the instance is removed here, whatever happened inside the block

The client speaks the engine's HTTP API through sqlrs.engine_client, as the CLI does: files and
includes are read exactly as `sqlrs prepare:psql` reads them, and a job is posted with step
digests first, the scripts only when the engine has to build from them. Nothing of the engine
or the CLI is imported. See docs/python-api.md.
"""


from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlrs.entrypoints.library.client_questions import Questions
from sqlrs.entrypoints.library.client_spares import Spares
from sqlrs.entrypoints.library.client_types import (
    DowngradeReport,
    EngineUnavailable,
    Error,
    Instance,
    NotFoundError,
    OperationFailed,
    OutputCallback,
    RunResult,
    Seconds,
    State,
    StrPath,
    UsageError,
    _owner,
    _seconds,
    _translated,
)

__all__ = [
    "Client",
    "DowngradeReport",
    "EngineUnavailable",
    "Error",
    "Instance",
    "NotFoundError",
    "OperationFailed",
    "RunResult",
    "State",
    "UsageError",
]


class Client(Questions, Spares):
    """A connection to the sqlrs engine serving `state_dir` (spawned on first use when needed).

    `runtime` / `image` apply to everything this client prepares. Relative file names are resolved
    against `base_dir` (default: the current directory when a call is made), like the CLI resolves
    them against its cwd; nothing outside the workspace root (`workspace` when given, else the
    nearest directory with a `.sqlrs/`, else the git root of `base_dir`) is read unless
    `allow_outside=True`. The workspace's configuration (`.sqlrs/config.yaml`, `[tool.sqlrs]` of
    pyproject.toml) applies as in the CLI: `dbms.image` when `image` is None, `postgres.version`,
    `postgres.superuser`. `postgres_version` (e.g. 16) picks the PostgreSQL major; None: env
    SQLRS_POSTGRES_VERSION, else the workspace's postgres.version, else the engine's default.
    Thread-safe: every request uses its own connection.
    """


    # chains -------------------------------------------------------------------------------------
    def plan(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
             variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
             psql_args: Sequence[str] = (), from_state: State | str | None = None,
             alembic: StrPath | None = None, django: StrPath | None = None, to: str | None = None,
             exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
             liquibase: Sequence[str] | str | None = None) -> list[dict[str, Any]]:
        """The chain's states in order: `index`, `kind`, `source`, `state_id`, `cached`. Builds nothing.
        With `from_state` the first row (kind `state`) is that state instead of the base.

        Other input kinds instead of psql's: `alembic="alembic.ini"` (`to="REV"`: stop there), one
        state per revision; `django="manage.py"` (`to="APP.MIGRATION"`), one state per migration;
        `exec=["cmd", "arg"]` with `inputs=["migrations/**"]`, one state.
        """
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "django": django, "to": to, "exec": exec, "inputs": inputs,
                           "liquibase": liquibase},
                          from_state)
        result = self._job({**body, "plan_only": True}, None)
        plan: list[dict[str, Any]] = result.get("plan", [])
        return plan

    def build(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
              variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
              psql_args: Sequence[str] = (), on_event: Callable[[dict[str, Any]], None] | None = None,
              from_state: State | str | None = None, alembic: StrPath | None = None,
              django: StrPath | None = None, to: str | None = None, exec: Sequence[str] | str | None = None,
              inputs: Iterable[str] | str = (), liquibase: Sequence[str] | str | None = None) -> State:
        """Build (or find cached) the chain's states; start nothing. Concurrent builds of one chain
        (other processes, xdist workers) build each state once. `from_state`: build on that state
        (e.g. a snapshot) instead of the base.

        Other input kinds instead of psql's: `alembic="alembic.ini"` (`to="REV"`: stop there), one
        state per revision; `django="manage.py"` (or the directory holding it; `to="APP.MIGRATION"`),
        one state per Django migration, settings from DJANGO_SETTINGS_MODULE or manage.py;
        `exec=["cmd", "arg"]` with `inputs=["migrations/**"]`, one state;
        `liquibase="update --changelog-file=master.xml"`, one state per changeset.
        """
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "django": django, "to": to, "exec": exec, "inputs": inputs,
                           "liquibase": liquibase},
                          from_state)
        result = self._job({**body, "build_only": True}, on_event)
        return State(id=str(result["state_id"]), runtime=str(result.get("runtime", "")), image=body.get("image"))

    def prepare(self, files: Iterable[StrPath] | StrPath = (), *, sql: Iterable[str] | str = (),
                variables: Mapping[str, Any] | None = None, single_transaction: bool = False,
                psql_args: Sequence[str] = (), name: str | None = None, ttl: Seconds | None = None,
                on_name: str = "error", on_event: Callable[[dict[str, Any]], None] | None = None,
                from_state: State | str | None = None, alembic: StrPath | None = None,
                django: StrPath | None = None, to: str | None = None, exec: Sequence[str] | str | None = None,
                inputs: Iterable[str] | str = (), liquibase: Sequence[str] | str | None = None) -> Instance:
        """`sqlrs prepare:psql`: build the chain and start an instance of it (not removed for you;
        use `instance()` for that). `ttl`: idle TTL (None: the engine's instance.ttl_seconds).
        `from_state` (`--from`): start the chain from that state (id, prefix or State, e.g. from
        `snapshot()`) instead of the base; with no steps, an instance of that state.
        `alembic=` / `django=` / `exec=` / `liquibase=`: as in `build()`."""
        body = self._body(files, sql, variables, single_transaction, psql_args,
                          {"alembic": alembic, "django": django, "to": to, "exec": exec, "inputs": inputs,
                           "liquibase": liquibase},
                          from_state)
        body.update(name=name, on_name=on_name)
        ttl_seconds = _seconds(ttl)
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        result = self._job(body, on_event)
        return self.get_instance(str(result["instance_id"]))

    # instances ----------------------------------------------------------------------------------
    def create_instance(self, state: State | str, *, pool: bool = False, ttl: Seconds | None = None,
                        name: str | None = None, owned: bool = True, kind: str = "auto") -> Instance:
        """Start an instance of a cached state; with `pool=True` claim a warm spare when the state
        has a pool (see `set_pool`), which takes milliseconds.

        `owned`: the instance belongs to this process; the engine removes it within seconds once
        the process is gone (killed, crashed) unless `keep()` was called. `owned=False`: it stays
        (until removed or its TTL runs out), like the CLI's instances.

        `kind="server"`: a server of its own. `kind="database"`: a database of its own in the
        state's shared server (a template copy made ahead: milliseconds on any store, but
        database-level isolation: instances of one state share a server, its roles and settings).
        `kind="auto"` (default): what the pytest plugin takes, `default_instance_kind()`; a server
        with `pool=True` (pools hold servers) or when the state holds other databases than
        `postgres` (a database instance copies only that one)."""
        if kind not in ("auto", "server", "database"):
            raise UsageError(f"unknown instance kind {kind!r}", hint="auto, server or database")
        chosen = kind
        if kind == "auto":
            chosen = "server" if pool or str(state) in self._server_only else self.default_instance_kind()
        body: dict[str, Any] = {"state_id": str(state), "pool": pool, "name": name, "kind": chosen,
                                "image": state.image if isinstance(state, State) else self.image}
        if owned:
            body["owner"] = _owner()
        ttl_seconds = _seconds(ttl)
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        try:
            return Instance.from_json(self.call("POST", "/v1/instances", body), self)
        except UsageError as exc:
            if kind != "auto" or chosen != "database" or "holds databases" not in exc.message:
                raise
            self._server_only.add(str(state))
            return Instance.from_json(self.call("POST", "/v1/instances", {**body, "kind": "server"}), self)

    def default_instance_kind(self) -> str:
        """The kind `kind="auto"` stands for on this engine: "database" on a store that copies (the
        `copy` store), where a server instance costs a full copy of the state's data directory and
        a database instance is a template copy made ahead; "server" on copy-on-write stores (btrfs,
        reflink), where a server instance is as fast and isolates more. Asked once per client."""
        if self._auto_kind is None:
            copy_on_write = self.status().get("snapshot", {}).get("copy_on_write")
            self._auto_kind = "server" if copy_on_write else "database"
        return self._auto_kind

    @contextlib.contextmanager
    def instance(self, files: Iterable[StrPath] | StrPath = (), *, state: State | str | None = None,
                 sql: Iterable[str] | str = (), variables: Mapping[str, Any] | None = None,
                 single_transaction: bool = False, psql_args: Sequence[str] = (), pool: bool = False,
                 ttl: Seconds | None = None, name: str | None = None, keep: bool = False,
                 kind: str = "auto", alembic: StrPath | None = None, django: StrPath | None = None,
                 to: str | None = None, exec: Sequence[str] | str | None = None, inputs: Iterable[str] | str = (),
                 liquibase: Sequence[str] | str | None = None) -> Iterator[Instance]:
        """A fresh instance for the `with` block, removed afterwards (unless `keep`), whatever happens.

        Give the chain (`files`, `sql`, ...; or `alembic=`/`django=`/`exec=`/`liquibase=` as in `build()`; built
        or found cached first) or a `state` from `build()`. `pool`, `ttl`, `name` and `kind` are
        `create_instance`'s.
        """
        if state is None:
            state = self.build(files, sql=sql, variables=variables, single_transaction=single_transaction,
                               psql_args=psql_args, alembic=alembic, django=django, to=to, exec=exec,
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
        if image is None:  # instances of it need its image (None: its runtime runs without one)
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
        from sqlrs.engine_client.psqlargs import parse_run_args, text_script
        from sqlrs.engine_client.runs import run_body, run_items

        ref = instance.id if isinstance(instance, Instance) else instance
        workspace = self._origin.workspace()
        with _translated():
            parsed = parse_run_args(list(args), workspace, tool)
            script = text_script(workspace, input) if input is not None else None
        if script is None and tool == "psql" and not parsed.uses_scripts:
            raise UsageError("nothing to run", hint="give -c SQL, -f FILE or input=...")
        stdout: list[str] = []
        stderr: list[str] = []
        exit_code, error = 1, None
        with _translated():
            for item in run_items(self.engine, run_body(ref, tool, parsed, script)):
                if "stream" in item:
                    (stdout if item["stream"] == "stdout" else stderr).append(item["data"])
                    if on_output is not None:
                        on_output(item["stream"], item["data"])
                if "error" in item:
                    error = str(item["error"].get("message", "the engine could not run the tool"))
                if "exit_code" in item:
                    exit_code = int(item["exit_code"])
        return RunResult(exit_code, "".join(stdout), "".join(stderr), error)

