"""`prepare:alembic`, `plan:alembic`, `prepare:exec`, `plan:exec`: input kinds besides psql.

Their steps are read by `hostinputs` and applied by the engine's executors (services/steps);
everything else (jobs, watching, the DSN, composites with run:psql/run:pgbench) is prepare:psql's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from sqlrs.entrypoints.cli.errors import usage

PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": ["--help"]}
# set while a composite `prepare:KIND ... run:TOOL ...` parses its prepare half: the body is kept
# there instead of being submitted (main.run_composite submits it as an ephemeral instance)
_capture: dict[str, Any] | None = None


@contextlib.contextmanager
def capturing(holder: dict[str, Any]) -> Iterator[None]:
    global _capture
    _capture = holder
    try:
        yield
    finally:
        _capture = None


def _runtime_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--image", help="Container image (docker/podman runtimes; default: config dbms.image)."),
        click.option("--runtime", type=click.Choice(["auto", "docker", "podman", "native"]),
                     help="Where PostgreSQL runs (default: config container.runtime, else auto)."),
    ]):
        func = decorator(func)
    return func


def _instance_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--name", help="Bind a name to the new instance (use it wherever an id is accepted)."),
        click.option("--reuse", is_flag=True, help="With --name: return the named instance if its state matches, "
                     "else replace it."),
        click.option("--fresh", is_flag=True, help="With --name: replace the named instance with a new one."),
        click.option("--watch/--no-watch", default=True, help="Follow the job (default) or print its id and return."),
        click.option("--ttl", "ttl", metavar="DURATION",
                     help="Remove the instance after it had no client connected for this long (90s, 15m, 2h; "
                          "0: never; default: config instance.ttl_seconds)."),
    ]):
        func = decorator(func)
    return func


def _alembic_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("-c", "--config", "config", default="alembic.ini", show_default=True,
                     help="The project's Alembic config file."),
        click.option("--to", "to", metavar="REV", help="Last revision to apply (default: every head)."),
    ]):
        func = decorator(func)
    return func


def _exec_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.argument("command", nargs=-1, type=click.UNPROCESSED)(func)
    return click.option("--input", "inputs", multiple=True, metavar="GLOB",
                        help="Files the command reads (repeatable; ** recurses; a directory means every file "
                             "in it): their content enters the cache key.")(func)


def _steps(kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlrs.entrypoints.cli.hostinputs import alembic_steps, exec_steps

    cwd = Path.cwd()
    if kind == "alembic":
        return alembic_steps(params["config"], params["to"], cwd)
    return exec_steps(list(params["command"]), list(params["inputs"]), cwd)


def _body(steps: list[dict[str, Any]], image: str | None, runtime: str | None, **extra: Any) -> dict[str, Any]:
    return {"steps": steps, "runtime": runtime, "image": image, **extra}


def _prepare(kind: str) -> Callable[..., None]:
    @click.pass_obj
    def command(ctx: Any, image: str | None, runtime: str | None, name: str | None, reuse: bool, fresh: bool,
                watch: bool, ttl: str | None, **params: Any) -> None:
        from sqlrs.entrypoints.cli.main import do_prepare, parse_duration

        if reuse and fresh:
            raise usage("--reuse and --fresh exclude each other")
        if (reuse or fresh) and not name:
            raise usage("--reuse and --fresh need --name")
        body = _body(_steps(kind, params), image, runtime, name=name,
                     on_name="reuse" if reuse else "fresh" if fresh else "error")
        if ttl is not None:
            body["ttl_seconds"] = parse_duration(ttl)
        if _capture is not None:
            if name:
                raise usage("--name cannot be used with a composite prepare ... run ...: the instance is removed")
            _capture.update(ctx=ctx, body={**body, "ephemeral": True})
            return
        result = do_prepare(ctx, body, watch)
        if result is not None:
            click.echo(result["dsn"])

    return command


def _plan(kind: str) -> Callable[..., None]:
    @click.pass_obj
    def command(ctx: Any, image: str | None, runtime: str | None, output: str, **params: Any) -> None:
        from sqlrs.entrypoints.cli.main import _submit, emit_json, short, table
        from sqlrs.entrypoints.cli.watching import NoProgress, watch_job

        body = _body(_steps(kind, params), image, runtime, plan_only=True)
        submitted, stream = _submit(ctx, body, watch=True)
        plan = watch_job(ctx, submitted["job_id"], NoProgress(), stream=stream).get("plan", [])
        if output == "json":
            emit_json(plan)
            return
        table([[str(s["index"]), s["kind"], s["source"], short(s["state_id"]), "cached" if s["cached"] else "build"]
               for s in plan], ["#", "KIND", "SOURCE", "STATE", "STATUS"])

    return command


ALEMBIC_HELP = """Build (or reuse) one state per Alembic revision and start an instance of the last.

\b
Runs your own Alembic, in this directory with this Python ({python}), against a scratch
server: `command.upgrade(config, REV)` one revision at a time, base to head, the server's URL
set as the config's sqlalchemy.url (env.py as `alembic init` writes it works unchanged;
DATABASE_URL is set too). Each revision is a cached state keyed by its file's content, env.py
and alembic.ini (sqlalchemy.url aside): adding a revision builds only that one.
Prints exactly one line on stdout: the instance's DSN.

\b
Examples:
  sqlrs prepare:alembic                          # ./alembic.ini, every head
  sqlrs prepare:alembic -c db/alembic.ini --to 3f2a1b
  sqlrs prepare:alembic run:psql -- -c '\\dt'     # throwaway instance
"""

EXEC_HELP = """Build (or reuse) the state a command leaves behind and start an instance of it.

\b
COMMAND runs once, in this directory, with the scratch server's connection in DATABASE_URL,
PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE. The state is keyed by the command line and
the content of the files --input declares, nothing else: a file it reads but you did not
declare can change without the cache noticing. Declaring them is your responsibility.
Prints exactly one line on stdout: the instance's DSN.

\b
Examples:
  sqlrs prepare:exec --input migrate.py --input 'migrations/*.sql' -- python migrate.py
  sqlrs prepare:exec --input 'db/**' -- sh -c 'psql -v ON_ERROR_STOP=1 -f db/all.sql'
  sqlrs prepare:exec --input 'db/**' -- ./migrate.sh up run:psql -- -c 'select 1'
"""


def add_input_commands(group: click.Group) -> None:
    """Register the input kinds' prepare and plan commands on the `sqlrs` group."""
    output = click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
    python = sys.executable
    group.command("prepare:alembic", help=ALEMBIC_HELP.format(python=python))(
        _runtime_options(_instance_options(_alembic_options(_prepare("alembic")))))
    group.command("plan:alembic", help="Show the revisions prepare:alembic would apply: one row per revision, "
                  "state id, cached or to build. Builds nothing.")(
        _runtime_options(output(_alembic_options(_plan("alembic")))))
    group.command("prepare:exec", context_settings=PASSTHROUGH, help=EXEC_HELP)(
        _runtime_options(_instance_options(_exec_options(_prepare("exec")))))
    group.command("plan:exec", context_settings=PASSTHROUGH,
                  help="Show the state prepare:exec would build for COMMAND: cached or to build. Builds nothing.")(
        _runtime_options(output(_exec_options(_plan("exec")))))
