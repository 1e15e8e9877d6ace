"""The `sqlrs` command line (docs/cli.md): the Click group, its context, and the entry point
behind the fast path (fast.py). One module per command family registers its commands here:
prepare_cmd (prepare:psql, plan:psql, watch, composites), run_cmd, inventory_cmd (status, ls,
rm), config_cmd (config, engine), inputs (alembic, exec), lb_cmd (Liquibase), snapshot_cmd,
remote_cmd (push, pull), init_cmd, analyze_cmd (compare, check:*, bisect:*). Thin: no engine
imports on the hot path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sqlrs import __version__
from sqlrs.engine_client.errors import EXIT_USAGE
from sqlrs.entrypoints.cli import output
from sqlrs.entrypoints.cli.alias_cmd import alias_group, plan_alias, prepare_alias, run_alias
from sqlrs.entrypoints.cli.analyze_cmd import add_analyze_commands
from sqlrs.entrypoints.cli.argv import composite_split
from sqlrs.entrypoints.cli.config_cmd import config_group, engine_group
from sqlrs.entrypoints.cli.discover_cmd import discover
from sqlrs.entrypoints.cli.init_cmd import init_group
from sqlrs.entrypoints.cli.inputs import add_input_commands
from sqlrs.entrypoints.cli.inspect_cmd import cache_group, diff
from sqlrs.entrypoints.cli.inventory_cmd import ls, rm, status
from sqlrs.entrypoints.cli.lb_cmd import plan_lb, prepare_lb
from sqlrs.entrypoints.cli.output import human_bytes  # noqa: F401 - the one size formatter (tests/unit/test_sizes.py)
from sqlrs.entrypoints.cli.prepare_cmd import composite_obj, plan_psql, prepare_psql, run_composite
from sqlrs.entrypoints.cli.prepare_cmd import watch as watch_cmd
from sqlrs.entrypoints.cli.remote_cmd import pull_cmd, push_cmd
from sqlrs.entrypoints.cli.run_cmd import run_pgbench, run_psql
from sqlrs.entrypoints.cli.snapshot_cmd import snapshot_command

output.use_click()


class Ctx(output.Ctx):
    """Per-invocation settings shared by the commands (the state directory as a Path)."""

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir

            self._state_dir = default_state_dir()
        return Path(self._state_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sqlrs")
@click.option("--state-dir", type=click.Path(path_type=Path), envvar="SQLRS_STATE_DIR",
              help="Where sqlrs keeps everything (default: ~/.local/state/sqlrs; /var/lib/sqlrs as root).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--workspace", metavar="DIR", envvar="SQLRS_WORKSPACE",
              help="The workspace root: files are read below it, its .sqlrs/config.yaml configures the project "
                   "(default: the nearest directory with a .sqlrs/, else the git root).")
@click.option("--timeout", metavar="DURATION", help="Give up after this long (30s, 15m, 1h30m): exit 1, a job "
              "followed is cancelled (its finished steps stay cached).")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, quiet: bool, workspace: str | None, timeout: str | None) -> None:
    """Disposable PostgreSQL databases from cached SQL build steps.

    \b
    Build a state from scripts and get a running copy of it (its DSN on stdout):
      sqlrs prepare:psql -- -f schema.sql -f seed.sql
    Run psql against it, or do both with a throwaway instance:
      sqlrs run:psql --instance NAME -- -c 'select count(*) from users'
      sqlrs prepare:psql -- -f schema.sql run:psql -- -c 'select 1'
    Each -f/-c is a cached step: editing step 7 of 50 rebuilds steps 7..50 only.
    """
    composite = composite_obj(ctx.obj)
    ctx.obj = Ctx(state_dir.absolute() if state_dir else None, quiet, workspace, timeout)
    ctx.obj.composite = composite


for command in (prepare_psql, plan_psql, watch_cmd, run_psql, run_pgbench):
    cli.add_command(command)
add_input_commands(cli)
add_analyze_commands(cli)
for command in (ls, rm, status, config_group, init_group, snapshot_command, push_cmd, pull_cmd, engine_group,
                prepare_lb, plan_lb, prepare_alias, plan_alias, run_alias, alias_group, cache_group, diff, discover):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the Click CLI on argv (fast.main hands it every form it does not take itself)."""
    args = list(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        try:
            if composite_split(args) is not None:
                run_composite(cli, args)
            cli.main(args, prog_name="sqlrs", standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USAGE)

    output.guarded(run)
