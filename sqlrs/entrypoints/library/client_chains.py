"""The chain of a library call (`Client.plan/build/prepare(files=..., sql=..., alembic=...)`) as a
prepare job's request body, read exactly as the CLI's `prepare:*` commands read theirs (through
sqlrs.engine_client)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlrs.entrypoints.library.client_types import State, StrPath, UsageError, _translated

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.engine_client.psqlargs import Workspace


@dataclass(frozen=True)
class ChainOrigin:
    """Where and how a Client reads a chain: its settings, as the CLI's are its cwd and options."""

    runtime: str | None
    image: str | None
    base_dir: Path | None  # None: the current directory when a call is made
    workspace_root: Path | None
    allow_outside: bool
    config: Path  # the state directory's config.json (where Liquibase's launcher may be set)

    @property
    def cwd(self) -> Path:
        return self.base_dir or Path.cwd()

    def workspace(self) -> Workspace:
        """The workspace relative names are read in (psql's rule: nothing outside its root)."""
        from sqlrs.engine_client.psqlargs import Workspace

        return Workspace(cwd=self.cwd, root=self.workspace_root, allow_outside=self.allow_outside)


def _psql(origin: ChainOrigin, files: Iterable[StrPath] | StrPath, sql: Iterable[str] | str,
           variables: Mapping[str, Any] | None, single_transaction: bool,
           psql_args: Sequence[str], from_state: State | str | None = None) -> dict[str, Any]:
    """The request body's steps and options, read exactly as `sqlrs prepare:psql` reads them.

    Steps run in this order: `psql_args` (psql syntax: -f, -c, -v, -1), then `files`, then `sql`.
    With `from_state` the chain starts from that state instead of the base, and may be empty.
    """
    from sqlrs.engine_client.jobs import psql_chain
    from sqlrs.engine_client.psqlargs import parse_prepare_args

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
        parsed = parse_prepare_args(args, origin.workspace())
    if not parsed.steps and from_state is None:
        raise UsageError("nothing to prepare", hint="give files=[...] or sql=[...]")
    return {**psql_chain(parsed), "runtime": origin.runtime, "image": origin.image}


def _start_from(origin: ChainOrigin, body: dict[str, Any], from_state: State | str) -> dict[str, Any]:
    """The chain on `from_state` instead of the base: its runtime and image unless the client names them."""
    body = {**body, "from_state": str(from_state)}
    if isinstance(from_state, State):
        body["runtime"] = origin.runtime if origin.runtime not in (None, "auto") else from_state.runtime or None
        body["image"] = from_state.image or origin.image
    return body


def _host(origin: ChainOrigin, host: Mapping[str, Any], psql: bool) -> dict[str, Any] | None:
    """The request body for the other input kinds (`alembic=`, `django=`, `exec=`), None for psql's.

    Alembic, Django and commands run in `base_dir` (default: the current directory; Django: the
    directory of its manage.py), with this process's Python and environment, as `sqlrs
    prepare:alembic` / `prepare:django` / `prepare:exec` do.
    """
    alembic, django, exec, to = host.get("alembic"), host.get("django"), host.get("exec"), host.get("to")
    inputs = host.get("inputs") or ()
    given = [name for name, value in (("alembic", alembic), ("django", django), ("exec", exec)) if value is not None]
    if not given:
        if to is not None or inputs:
            raise UsageError("to= goes with alembic= or django=, inputs= with exec=")
        return None
    if psql or len(given) > 1:
        raise UsageError("give one input kind per chain: files/sql/psql_args, alembic=, django= or exec=")
    if inputs and exec is None:
        raise UsageError("inputs= goes with exec=")
    if to is not None and exec is not None:
        raise UsageError("to= goes with alembic= or django=")
    from sqlrs.engine_client.hostinputs import alembic_steps, exec_steps

    cwd = origin.cwd
    with _translated():
        if alembic is not None:
            steps = alembic_steps(os.fspath(alembic), to, cwd)
        elif django is not None:
            from sqlrs.engine_client.django import django_steps

            steps = django_steps(django, None, to, cwd)
        else:
            command = [exec] if isinstance(exec, str) else list(exec or [])
            steps = exec_steps(command, [inputs] if isinstance(inputs, str) else list(inputs), cwd)
    return {"steps": steps, "runtime": origin.runtime, "image": origin.image}


def _liquibase(origin: ChainOrigin, liquibase: Sequence[str] | str, other: bool) -> dict[str, Any]:
    """`liquibase="update --changelog-file=master.xml"` (or its argument list): one state per
    changeset, as `sqlrs prepare:lb -- ARGS` in `base_dir` (default: the current directory)."""
    import shlex

    from sqlrs.engine_client.liquibase import liquibase_steps

    if other:
        raise UsageError("give one input kind per chain: files/sql/psql_args, alembic=, exec= or liquibase=")
    args = shlex.split(liquibase) if isinstance(liquibase, str) else list(liquibase)
    with _translated():
        steps = liquibase_steps(args, origin.cwd, origin.config, origin.allow_outside)
    return {"steps": steps, "runtime": origin.runtime, "image": origin.image}


def request_body(origin: ChainOrigin, files: Iterable[StrPath] | StrPath, sql: Iterable[str] | str,
                 variables: Mapping[str, Any] | None, single_transaction: bool, psql_args: Sequence[str],
                 host: Mapping[str, Any], from_state: State | str | None = None) -> dict[str, Any]:
    """A prepare job's chain from the library's arguments: psql steps (`files`, `sql`, ...) or one
    of the host kinds in `host` (`alembic`/`to`, `django`/`to`, `exec`/`inputs`, `liquibase`), not both."""
    files = [files] if isinstance(files, str | os.PathLike) else list(files)
    psql = bool(files or sql or psql_args or variables or single_transaction)
    chain: dict[str, Any] | None = None
    if host.get("liquibase") is not None:
        chain = _liquibase(origin, host["liquibase"], psql or any(
            host.get(k) for k in ("alembic", "django", "to", "exec", "inputs")))
    else:
        chain = _host(origin, host, psql)
    if chain is None:
        chain = _psql(origin, files, sql, variables, single_transaction, psql_args, from_state)
    return chain if from_state is None else _start_from(origin, chain, from_state)
