"""The body of `sqlrs run:psql` / `run:pgbench` (and of a composite's run half): standard
library only (the fast path runs it too)."""

from __future__ import annotations

import os
import sys

from sqlrs.engine_client.errors import ClientError, usage
from sqlrs.entrypoints.cli.output import echo

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from sqlrs.entrypoints.cli.output import Ctx


def need_instance(tool: str, instance: str | None) -> str:
    if not instance:
        raise usage(f"run:{tool} needs --instance ID|NAME",
                    hint=f"or prepare a throwaway one: sqlrs prepare:psql -- -f x.sql run:{tool} ...")
    return instance


class Ref:
    """A run stage's --ref, --ref-mode, --ref-keep-worktree (gitref.py)."""

    def __init__(self, ref: str | None = None, mode: str | None = None, keep: bool = False):
        self.ref = ref
        self.mode = mode
        self.keep = keep


def run(ctx: Ctx, tool: str, instance: str, args: tuple[str, ...], allow_outside: bool,
        ref: Ref | None = None) -> int:
    """Run the tool where the instance runs; its output streams here; its exit code.

    psql with no -c/-f reads the script from stdin, or, on a terminal, is a session of the local
    psql against the instance (this process becomes that psql). With --ref its script files are
    read at that Git revision."""
    from sqlrs.engine_client.psqlargs import Workspace, parse_run_args, stdin_script
    from sqlrs.engine_client.runs import run_body, run_items

    workspace = Workspace.detect(allow_outside)
    if ref is not None and (ref.ref is not None or ref.mode is not None or ref.keep):
        from sqlrs.entrypoints.cli.gitref import checkout

        with checkout(ref.ref, ref.mode, ref.keep, note=ctx.note):
            parsed = parse_run_args(list(args), Workspace.detect(allow_outside), tool)
        if tool == "psql" and not parsed.uses_scripts:
            raise usage("--ref reads the run's script files: give -f FILE (or -c SQL)")
    else:
        parsed = parse_run_args(list(args), workspace, tool)
    script = None
    if tool == "psql" and not parsed.uses_scripts:
        if os.isatty(0):
            return interactive_psql(ctx, instance, list(parsed.tool_args))
        script = stdin_script(workspace)
    exit_code = 1
    for item in run_items(ctx.client(), run_body(instance, tool, parsed, script)):
        if "stream" in item:
            stream = sys.stdout.buffer if item["stream"] == "stdout" else sys.stderr.buffer
            stream.write(item["data"].encode("utf-8", "surrogateescape"))
            stream.flush()
        if "error" in item:
            echo(f"sqlrs: error: {ClientError.from_engine(item['error']).message}", err=True)
        if "warning" in item:
            warning = ClientError.from_engine(item["warning"])
            echo(f"sqlrs: warning: {warning.message}" + (f"\nhint: {warning.hint}" if warning.hint else ""), err=True)
        if "exit_code" in item:
            exit_code = int(item["exit_code"])
    return exit_code


def interactive_psql(ctx: Ctx, instance: str, tool_args: list[str]) -> int:
    """A terminal session: run the local psql against the instance's DSN."""
    import shutil

    data = ctx.client().call("GET", f"/v1/instances/{instance}")
    if data.get("status") == "missing":  # its server vanished: any run restarts it on its data dir
        run(ctx, "psql", data["id"], ("-X", "-c", ""), False)
        data = ctx.client().call("GET", f"/v1/instances/{data['id']}")  # its port may have changed
    psql = shutil.which("psql")
    if psql is None:
        raise ClientError("psql is not installed here for an interactive session", hint=f"connect with: {data['dsn']}")
    os.execv(psql, [psql, *tool_args, data["dsn"]])
