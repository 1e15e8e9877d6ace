"""`sqlrs prepare:psql`, `plan:psql`, `watch`, and the composite `prepare:KIND ... run:TOOL ...`.

The bodies are preparing.py's (the fast path runs prepare:psql with the same one).
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from sqlrs.engine_client.errors import ClientError, usage
from sqlrs.entrypoints.cli import preparing, running
from sqlrs.entrypoints.cli.argv import composite_split
from sqlrs.entrypoints.cli.options import PASSTHROUGH, instance_options, output_option, prepare_options
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json

PREPARE_HELP = """Build (or reuse) the state PSQL_ARGS describe and start an instance of it.

\b
Prints exactly one line on stdout: the instance's DSN. Progress goes to stderr.
PSQL_ARGS follow psql: -f FILE (repeatable; -f - is stdin), -c SQL (repeatable),
-v NAME=VALUE, -1/--single-transaction. Each -f/-c is one cached step.
Connection flags (-h -p -U -d) are refused: sqlrs connects psql itself.

\b
Examples:
  sqlrs prepare:psql -- -f schema.sql -f seed.sql
  sqlrs prepare:psql --name dev -- -f db/init.sql -v env=dev
  DSN=$(sqlrs prepare:psql -- -f schema.sql) && psql "$DSN"
  sqlrs prepare:psql -- -f schema.sql run:psql -- -c 'select 1'   # throwaway instance
  sqlrs prepare:psql --from STATE -- -f more.sql    # on a saved state (sqlrs snapshot)
  sqlrs prepare:psql --from STATE                   # an instance of STATE
"""


@click.command("prepare:psql", context_settings=PASSTHROUGH, help=PREPARE_HELP)
@prepare_options
@instance_options
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def prepare_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
                 from_state: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool,
                 provenance: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
                 psql_args: tuple[str, ...]) -> None:
    preparing.prepare(ctx, lambda on_name, ttl_seconds: preparing.psql_body(
        psql_args, image, runtime, name, allow_outside, on_name=on_name, ttl_seconds=ttl_seconds, kind=kind,
        from_state=from_state), name=name, reuse=reuse, fresh=fresh, watch=watch, ttl=ttl,
        stage=preparing.Stage(ref, ref_mode, ref_keep, provenance))


@click.command("plan:psql", context_settings=PASSTHROUGH)
@prepare_options
@output_option
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def plan_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
              from_state: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool, provenance: str | None,
              output: str, psql_args: tuple[str, ...]) -> None:
    """Show the step chain PSQL_ARGS describe: state ids, cached or to build. Builds nothing."""
    preparing.plan(ctx, lambda: preparing.psql_body(psql_args, image, runtime, None, allow_outside, plan_only=True,
                                                    from_state=from_state), output,
                   preparing.Stage(ref, ref_mode, ref_keep, provenance))


@click.command("watch")
@click.argument("job_id")
@click.pass_obj
def watch(ctx: Ctx, job_id: str) -> None:
    """Attach to a prepare job; prints its DSN on stdout when it succeeds."""
    from sqlrs.entrypoints.cli.watching import make_progress, watch_job

    job = ctx.client().call("GET", f"/v1/prepare-jobs/{job_id}")
    result = watch_job(ctx, job["id"], make_progress(ctx.quiet))
    if "dsn" in result:
        echo(result["dsn"])
    else:
        emit_json(result)


# -- the composite -------------------------------------------------------------------------------
def run_composite(group: click.Group, argv: list[str]) -> NoReturn:
    """`sqlrs [opts] prepare[:KIND] ... run[:TOOL] ...`: an ephemeral instance, removed afterwards.

    The prepare half (raw or an alias) is parsed and read by its own command, which hands the job
    to the Composite it finds on its context instead of submitting it (preparing.prepare). The run
    half is `run:TOOL ARGS` or `run REF` (a run alias, alias_cmd.run_stage)."""
    split = composite_split(argv)
    assert split is not None
    prepare_argv, run_argv = argv[:split], argv[split:]
    composite = preparing.Composite()
    group.main(prepare_argv, prog_name="sqlrs", standalone_mode=False, obj=composite)
    if composite.ctx is None or composite.body is None:
        sys.exit(0)  # the prepare half only showed its --help
    ctx = composite.ctx
    if run_argv[0] == "run":
        from sqlrs.entrypoints.cli.alias_cmd import run_stage

        tool, filtered = run_stage(run_argv[1:])
        allow_outside = False
    else:
        tool, run_args = run_argv[0].split(":", 1)[1], run_argv[1:]
        allow_outside = False
        kept: list[str] = []
        for index, arg in enumerate(run_args):
            if arg == "--instance" or arg.startswith("--instance="):
                raise usage("--instance cannot be used in a composite run: it uses the prepared instance")
            if arg.startswith("--ref") and "--" not in run_args[:index]:
                raise usage("--ref cannot be used with a composite prepare ... run ... yet")
            if arg == "--allow-outside" and "--" not in run_args[:index]:
                allow_outside = True
                continue
            kept.append(arg)
        filtered = tuple(kept)
    from sqlrs.entrypoints.cli.output import Detached

    try:
        result = preparing.submit(ctx, composite.body, watch=True)
    except Detached as detached:
        echo(f"detached: job {detached.job_id} keeps running (its steps get cached); the run is skipped "
             "and the instance the job makes is removed once unused (see --ttl)", err=True)
        sys.exit(0)
    assert result is not None
    instance_id = result["instance_id"]
    code = 1
    try:
        code = running.run(ctx, tool, instance_id, filtered, allow_outside)
    finally:
        try:
            ctx.client().call("DELETE", f"/v1/instances/{instance_id}?force=true")
        except ClientError as exc:
            echo(f"sqlrs: warning: could not remove instance {instance_id}: {exc.message}", err=True)
    sys.exit(code)


def composite_obj(obj: Any) -> preparing.Composite | None:
    """The Composite run_composite passed as the context object, if this run is its prepare half."""
    return obj if isinstance(obj, preparing.Composite) else None
