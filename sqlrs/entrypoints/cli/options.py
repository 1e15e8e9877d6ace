"""Click options that several commands share, defined once: every prepare:KIND / plan:KIND
takes the runtime options, every prepare:KIND the instance options (fast.py's option table
copies prepare:psql's; tests/unit/test_cli_fast.py keeps the two equal)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from sqlrs import extensions

# commands whose arguments are another tool's (psql, pgbench, Liquibase, a command): options they
# do not know go through, and only --help is sqlrs' own (-h is psql's host)
PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": ["--help"]}

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _apply(decorators: list[Decorator]) -> Decorator:
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return wrap


class Registered(click.Choice):
    """`auto` or a name registered in an entry point group (sqlrs.extensions), read when Click first
    needs the choices (help, a value to check), not when the CLI starts."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return ("auto", *extensions.names(self.group))

    @choices.setter
    def choices(self, value: object) -> None:
        raise AttributeError("the choices are the registered names")


def runtime_choice() -> Registered:
    return Registered(extensions.RUNTIMES)


runtime_options = _apply([
    click.option("--image", help="Container image (container runtimes; default: config dbms.image)."),
    click.option("--runtime", type=runtime_choice(),
                 help="Where PostgreSQL runs: auto or a runtime's name (default: config container.runtime, "
                      "else auto)."),
])

# every prepare:KIND and plan:KIND (prepare:psql with no PSQL_ARGS: an instance of STATE)
from_option = click.option(
    "--from", "from_state", metavar="STATE",
    help="Start the chain from this state (id or unique prefix, e.g. a snapshot) instead of the base.")

kind_option = click.option(
    "--kind", type=click.Choice(["server", "database"]),
    help="server (default): a PostgreSQL server of its own; database: a database of its own "
         "in the state's shared server (fast on any store; database-level isolation).")

# --ref on every prepare/plan/run stage (gitref.py), --provenance-path on prepare/plan stages
ref_options = _apply([
    click.option("--ref", "ref", metavar="GIT_REF",
                 help="Read the input files at this Git revision (branch, tag, commit, HEAD~1) without touching "
                      "the working tree; the current directory is projected into it."),
    click.option("--ref-mode", type=click.Choice(["worktree", "blob"]),
                 help="worktree (default): a temporary detached worktree; blob: the files read from Git's "
                      "objects, no worktree."),
    click.option("--ref-keep-worktree", "ref_keep", is_flag=True,
                 help="Keep the temporary worktree afterwards (its path on stderr)."),
])
provenance_option = click.option(
    "--provenance-path", "provenance", metavar="FILE",
    help="Write a JSON record of what this used (inputs and digests, state ids, runtime) and its outcome.")
stage_options = _apply([ref_options, provenance_option])

# prepare:psql / plan:psql and prepare:lb / plan:lb
prepare_options = _apply([
    runtime_options,
    click.option("--allow-outside", is_flag=True, help="Allow reading files outside the workspace root."),
    kind_option,
    from_option,
    stage_options,
])

# what every prepare:KIND does with the instance it makes (preparing.prepare)
instance_options = _apply([
    click.option("--name", help="Bind a name to the new instance (use it wherever an id is accepted)."),
    click.option("--reuse", is_flag=True, help="With --name: return the named instance if its state matches, "
                 "else replace it."),
    click.option("--fresh", is_flag=True, help="With --name: replace the named instance with a new one."),
    click.option("--watch/--no-watch", default=True, help="Follow the job (default) or print its id and return."),
    click.option("--ttl", "ttl", metavar="DURATION",
                 help="Remove the instance after it had no client connected for this long (90s, 15m, 2h; "
                      "0: never; default: config instance.ttl_seconds)."),
])

# prepare:alembic / plan:alembic, check:alembic, bisect:alembic: the project's chain of revisions
alembic_options = _apply([
    click.option("-c", "--config", "config", default="alembic.ini", show_default=True,
                 help="The project's Alembic config file."),
    click.option("--to", "to", metavar="REV", help="Last revision of the chain (default: every head)."),
])

# prepare:django / plan:django, check:django: the project's migrations in Django's plan order
django_options = _apply([
    click.option("--settings", "settings", metavar="MODULE",
                 help="The settings module (default: DJANGO_SETTINGS_MODULE, else the one manage.py sets)."),
    click.option("--manage", "manage", metavar="PATH",
                 help="The project's manage.py (default: ./manage.py); migrations run in its directory."),
    click.option("--to", "to", metavar="APP.MIGRATION",
                 help="Stop there, as `manage.py migrate APP MIGRATION` would on an empty database "
                      "(a unique prefix of the name will do; default: every app's latest)."),
])

output_option = click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
json_flag = click.option("--json", "as_json", is_flag=True, help="Same as -o json.")
