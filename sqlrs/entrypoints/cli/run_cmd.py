"""`sqlrs run:psql` and `sqlrs run:pgbench` (the body is running.py's, the fast path's too)."""

from __future__ import annotations

import sys

import click

from sqlrs.entrypoints.cli import running
from sqlrs.entrypoints.cli.options import PASSTHROUGH, ref_options
from sqlrs.entrypoints.cli.output import Ctx

EXAMPLES = {
    "psql": "\b\nExamples:\n  sqlrs run:psql --instance dev -- -c 'select 1'\n"
            "  sqlrs run:psql --instance dev -- -f report.sql\n  echo 'select 1' | sqlrs run:psql --instance dev\n",
    "pgbench": "\b\nExamples:\n  sqlrs run:pgbench --instance dev -- -i -s 10\n"
               "  sqlrs run:pgbench --instance dev -- -c 4 -T 30\n",
}


def run_command(tool: str) -> click.Command:
    @click.command(f"run:{tool}", context_settings=PASSTHROUGH,
                   help=f"Run {tool} against an instance; output streams, the exit code is {tool}'s.\n\n"
                        + EXAMPLES[tool])
    @click.option("--instance", help="Instance id, unique id prefix, or name.")
    @click.option("--allow-outside", is_flag=True, help="Allow script files outside the workspace.")
    @ref_options
    @click.argument("tool_args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_obj
    def command(ctx: Ctx, instance: str | None, allow_outside: bool, ref: str | None, ref_mode: str | None,
                ref_keep: bool, tool_args: tuple[str, ...]) -> None:
        sys.exit(running.run(ctx, tool, running.need_instance(tool, instance), tool_args, allow_outside,
                             running.Ref(ref, ref_mode, ref_keep)))

    return command


run_psql = run_command("psql")
run_pgbench = run_command("pgbench")
