"""`prepare:alembic`, `plan:alembic`, `prepare:django`, `plan:django`, `prepare:exec`, `plan:exec`: input
kinds besides psql.

Their steps are read by `hostinputs` (Django's by `engine_client.django`) and applied by the engine's
executors (services/states/steps); everything else (jobs, watching, the DSN, composites with run:psql/run:pgbench)
is prepare:psql's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sqlrs.engine_client import jobs
from sqlrs.entrypoints.cli import preparing
from sqlrs.entrypoints.cli.options import (
    PASSTHROUGH,
    alembic_options,
    django_options,
    from_option,
    instance_options,
    kind_option,
    output_option,
    runtime_options,
    stage_options,
)
from sqlrs.entrypoints.cli.output import Ctx


def _exec_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.argument("command", nargs=-1, type=click.UNPROCESSED)(func)
    return click.option("--input", "inputs", multiple=True, metavar="GLOB",
                        help="Files the command reads (repeatable; ** recurses; a directory means every file "
                             "in it): their content enters the cache key.")(func)


def _steps(kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlrs.engine_client.hostinputs import alembic_steps, exec_steps

    # an alias of these kinds runs in its file's directory (--base-dir, hidden: aliases.py)
    cwd = Path(params["base_dir"]) if params.get("base_dir") else Path.cwd()
    if kind == "alembic":
        return alembic_steps(params["config"], params["to"], cwd)
    if kind == "django":
        from sqlrs.engine_client.django import django_steps

        return django_steps(params["manage"], params["settings"], params["to"], cwd)
    return exec_steps(list(params["command"]), list(params["inputs"]), cwd)


def _prepare(input_kind: str) -> Callable[..., None]:
    @click.pass_obj
    def command(ctx: Ctx, image: str | None, runtime: str | None, kind: str | None, from_state: str | None,
                ref: str | None, ref_mode: str | None, ref_keep: bool, provenance: str | None,
                name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None, **params: Any) -> None:
        preparing.prepare(ctx, lambda on_name, ttl_seconds: jobs.job_body(
            {"steps": _steps(input_kind, params)}, runtime=runtime, image=image, name=name, on_name=on_name,
            ttl_seconds=ttl_seconds, instance_kind=kind, from_state=from_state), name=name, reuse=reuse,
            fresh=fresh, watch=watch, ttl=ttl, stage=preparing.Stage(ref, ref_mode, ref_keep, provenance))

    return command


def _plan(input_kind: str) -> Callable[..., None]:
    @click.pass_obj
    def command(ctx: Ctx, image: str | None, runtime: str | None, from_state: str | None, ref: str | None,
                ref_mode: str | None, ref_keep: bool, provenance: str | None, output: str, **params: Any) -> None:
        preparing.plan(ctx, lambda: jobs.job_body({"steps": _steps(input_kind, params)}, runtime=runtime,
                                                  image=image, plan_only=True, from_state=from_state), output,
                       preparing.Stage(ref, ref_mode, ref_keep, provenance))

    return command


base_dir_option = click.option("--base-dir", "base_dir", hidden=True,
                               help="Where the tool runs and relative paths start (an alias file's directory).")


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

DJANGO_HELP = """Build (or reuse) one state per Django migration and start an instance of the last.

\b
Runs your project's own Django, in the directory of manage.py with this Python ({python}),
against a scratch server: `migrate APP MIGRATION` one migration at a time, in the order
`manage.py migrate` applies them to an empty database, with the settings' default database
pointed at the scratch server (your settings are not edited). Each migration is a cached state
keyed by its file's content and Django's feature release: a new migration builds itself and the
rows Django plans after it, nothing before it.
Prints exactly one line on stdout: the instance's DSN.

\b
Examples:
  sqlrs prepare:django                                # ./manage.py, every app's latest
  sqlrs prepare:django --settings mysite.settings_ci --to polls.0003
  sqlrs prepare:django run:psql -- -c '\\dt'            # throwaway instance
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
    output = output_option
    python = sys.executable
    group.command("prepare:alembic", help=ALEMBIC_HELP.format(python=python))(
        runtime_options(kind_option(from_option(stage_options(instance_options(base_dir_option(
            alembic_options(_prepare("alembic")))))))))
    group.command("plan:alembic", help="Show the revisions prepare:alembic would apply: one row per revision, "
                  "state id, cached or to build. Builds nothing.")(
        runtime_options(from_option(stage_options(output(base_dir_option(alembic_options(_plan("alembic"))))))))
    group.command("prepare:django", help=DJANGO_HELP.format(python=python))(
        runtime_options(kind_option(from_option(stage_options(instance_options(base_dir_option(
            django_options(_prepare("django")))))))))
    group.command("plan:django", help="Show the migrations prepare:django would apply: one row per migration, in "
                  "Django's plan order, state id, cached or to build. Builds nothing.")(
        runtime_options(from_option(stage_options(output(base_dir_option(django_options(_plan("django"))))))))
    group.command("prepare:exec", context_settings=PASSTHROUGH, help=EXEC_HELP)(
        runtime_options(kind_option(from_option(stage_options(instance_options(base_dir_option(
            _exec_options(_prepare("exec")))))))))
    group.command("plan:exec", context_settings=PASSTHROUGH,
                  help="Show the state prepare:exec would build for COMMAND: cached or to build. Builds nothing.")(
        runtime_options(from_option(stage_options(output(base_dir_option(_exec_options(_plan("exec"))))))))
