"""`prepare:lb` / `plan:lb`: Liquibase changelogs as chains of cached states, one per changeset.

    sqlrs prepare:lb -- update --changelog-file=master.xml [--search-path=DIR] [Liquibase args]

The changelogs are read into steps by sqlrs.engine_client.liquibase (no JVM: a plan is instant);
the engine applies each with a real Liquibase. Everything else is prepare:psql's (preparing.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sqlrs.engine_client import jobs
from sqlrs.entrypoints.cli import preparing
from sqlrs.entrypoints.cli.options import PASSTHROUGH, instance_options, output_option, prepare_options
from sqlrs.entrypoints.cli.output import Ctx


def lb_body(ctx: Ctx, args: tuple[str, ...], image: str | None, runtime: str | None, allow_outside: bool,
            **fields: Any) -> dict[str, Any]:
    """The job: one host step per changeset, in Liquibase's order (Liquibase is the workspace's
    liquibase.exec when it names one)."""
    from sqlrs.engine_client import workspace
    from sqlrs.engine_client.liquibase import liquibase_steps

    steps = liquibase_steps(list(args), Path.cwd(), Path(ctx.state_dir) / "config.json", allow_outside,
                            launcher=workspace.load().get("liquibase.exec"))
    return jobs.job_body({"steps": steps}, runtime=runtime, image=image, **fields)


PREPARE_LB_HELP = """Build (or reuse) the state a Liquibase changelog describes and start an instance of it.

\b
Prints exactly one line on stdout: the instance's DSN. Progress goes to stderr.
LIQUIBASE_ARGS are Liquibase's: update --changelog-file=FILE [--search-path=DIR]
[--contexts=...] [--labels=...] [-Dname=value] ... Every changeset is one cached
state: appending a changeset rebuilds only it. Connection arguments (--url,
--username, --password) are refused: sqlrs connects Liquibase itself.
Liquibase 4.x: config runtime.liquibase.path, env SQLRS_LIQUIBASE, PATH, or
/opt/sqlrs/liquibase (scripts/install.sh).

\b
Examples:
  sqlrs prepare:lb -- update --changelog-file=master.xml
  sqlrs prepare:lb -- update --changelog-file=db/master.yaml --contexts=test
  sqlrs prepare:lb -- update --changelog-file=master.xml run:psql -- -c 'select 1'
"""


@click.command("prepare:lb", context_settings=PASSTHROUGH, help=PREPARE_LB_HELP)
@prepare_options
@instance_options
@click.argument("lb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def prepare_lb(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
               from_state: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool,
               provenance: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
               lb_args: tuple[str, ...]) -> None:
    preparing.prepare(ctx, lambda on_name, ttl_seconds: lb_body(
        ctx, lb_args, image, runtime, allow_outside, name=name, on_name=on_name, ttl_seconds=ttl_seconds,
        instance_kind=kind, from_state=from_state), name=name, reuse=reuse, fresh=fresh, watch=watch, ttl=ttl,
        stage=preparing.Stage(ref, ref_mode, ref_keep, provenance))


@click.command("plan:lb", context_settings=PASSTHROUGH)
@prepare_options
@output_option
@click.argument("lb_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def plan_lb(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
            from_state: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool, provenance: str | None,
            output: str, lb_args: tuple[str, ...]) -> None:
    """Show the chain a Liquibase changelog describes, one row per changeset: state ids, cached or
    to build. Builds nothing, starts no JVM. Same arguments as prepare:lb."""
    preparing.plan(ctx, lambda: lb_body(ctx, lb_args, image, runtime, allow_outside, plan_only=True,
                                        from_state=from_state), output,
                   preparing.Stage(ref, ref_mode, ref_keep, provenance))
