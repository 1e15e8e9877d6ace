"""The `sqlrs` command line (SPEC section 3). Thin: no engine imports on the hot path."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from sqlrs import __version__
from sqlrs.domain.sizes import format_size as human_bytes
from sqlrs.entrypoints.cli.errors import EXIT_ENGINE, EXIT_USAGE, CliError, usage
from sqlrs.entrypoints.cli.fast import _lean, _post_job, _submit  # noqa: F401 - one request protocol
from sqlrs.entrypoints.cli.init_cmd import init_group
from sqlrs.entrypoints.cli.remote_cmd import pull_cmd, push_cmd
from sqlrs.entrypoints.cli.snapshot_cmd import snapshot_command

RUN_COMMANDS = ("run:psql", "run:pgbench")
PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": ["--help"]}


class Ctx:
    """Per-invocation settings shared by the commands."""

    def __init__(self, state_dir: Path | None, quiet: bool):
        self._state_dir = state_dir
        self.quiet = quiet
        self._client: Any = None

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir

            self._state_dir = default_state_dir()
        return self._state_dir

    def client(self, spawn: bool = True) -> Any:
        if self._client is None:
            from sqlrs.entrypoints.cli.client import connect

            self._client = connect(self.state_dir, spawn=spawn)
        return self._client

    def note(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


def fail(error: CliError) -> NoReturn:
    click.echo(f"sqlrs: error: {error.message}", err=True)
    if error.hint:
        click.echo(f"hint: {error.hint}", err=True)
    sys.exit(error.exit_code)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def short(identifier: str | None, n: int = 12) -> str:
    return (identifier or "-")[:n]


# -- table rendering -----------------------------------------------------------------------------
def table(rows: list[list[str]], headers: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- the group -----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sqlrs")
@click.option("--state-dir", type=click.Path(path_type=Path), envvar="SQLRS_STATE_DIR",
              help="Where sqlrs keeps everything (default: ~/.local/state/sqlrs; /var/lib/sqlrs as root).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def cli(ctx: click.Context, state_dir: Path | None, quiet: bool) -> None:
    """Disposable PostgreSQL databases from cached SQL build steps.

    \b
    Build a state from scripts and get a running copy of it (its DSN on stdout):
      sqlrs prepare:psql -- -f schema.sql -f seed.sql
    Run psql against it, or do both with a throwaway instance:
      sqlrs run:psql --instance NAME -- -c 'select count(*) from users'
      sqlrs prepare:psql -- -f schema.sql run:psql -- -c 'select 1'
    Each -f/-c is a cached step: editing step 7 of 50 rebuilds steps 7..50 only.
    """
    ctx.obj = Ctx(state_dir.absolute() if state_dir else None, quiet)


# -- prepare -------------------------------------------------------------------------------------
def _prepare_body(args: tuple[str, ...], image: str | None, runtime: str | None, name: str | None,
                  allow_outside: bool, plan_only: bool = False, ephemeral: bool = False,
                  on_name: str = "error", ttl_seconds: int | None = None, kind: str | None = None,
                  from_state: str | None = None) -> dict[str, Any]:
    from sqlrs.entrypoints.cli.psqlargs import Workspace, parse_prepare_args

    parsed = parse_prepare_args(list(args), Workspace.detect(allow_outside))
    if not parsed.steps and not plan_only and not from_state:
        raise usage("nothing to prepare",
                    hint="give at least one -f FILE or -c SQL, e.g. sqlrs prepare:psql -- -f schema.sql")
    body: dict[str, Any] = {
        "steps": parsed.steps,
        "options": {"variables": [list(v) for v in parsed.variables], "single_transaction": parsed.single_transaction},
        "runtime": runtime, "image": image, "name": name, "plan_only": plan_only, "ephemeral": ephemeral,
        "on_name": on_name,
    }
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if kind is not None:
        body["instance_kind"] = kind
    if from_state:
        body["from_state"] = from_state
    return body


def parse_duration(text: str) -> int:
    """'90' / '90s' / '15m' / '2h' / '1d' -> seconds; a usage error otherwise."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = units.get(value[-1:], 0)
    number = value[:-1] if factor else value
    factor = factor or 1
    if not number.isdigit():
        raise usage(f"--ttl {text}: expected seconds or a duration like 90s, 15m, 2h")
    return int(number) * factor


def do_prepare(ctx: Ctx, body: dict[str, Any], watch: bool) -> dict[str, Any] | None:
    submitted, stream = _submit(ctx, body, watch)
    job_id = submitted["job_id"]
    if not watch:
        click.echo(job_id)
        click.echo(submitted["status_url"])
        click.echo(submitted["events_url"])
        return None
    from sqlrs.entrypoints.cli.watching import make_progress, watch_job

    try:
        return watch_job(ctx, job_id, make_progress(ctx.quiet), stream=stream)
    except CliError as error:
        if error.code != "content_required":
            raise
        # a cached state was evicted between submitting and building: send the scripts this time
        full = ctx.client().call("POST", "/v1/prepare-jobs", body)
        return watch_job(ctx, full["job_id"], make_progress(ctx.quiet))


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
"""


def prepare_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--image", help="Container image (docker/podman runtimes; default: config dbms.image)."),
        click.option("--runtime", type=click.Choice(["auto", "docker", "podman", "native"]),
                     help="Where PostgreSQL runs (default: config container.runtime, else auto)."),
        click.option("--allow-outside", is_flag=True, help="Allow reading files outside the workspace root."),
        click.option("--kind", type=click.Choice(["server", "database"]),
                     help="server (default): a PostgreSQL server of its own; database: a database of its own "
                          "in the state's shared server (fast on any store; database-level isolation)."),
        click.option("--from", "from_state", metavar="STATE",
                     help="Start the chain from this state (id or unique prefix, e.g. a snapshot) instead of "
                          "the base; with no PSQL_ARGS, an instance of STATE."),
    ]):
        func = decorator(func)
    return func


@cli.command("prepare:psql", context_settings=PASSTHROUGH, help=PREPARE_HELP)
@prepare_options
@click.option("--name", help="Bind a name to the new instance (use it wherever an id is accepted).")
@click.option("--reuse", is_flag=True, help="With --name: return the named instance if its state matches, "
              "else replace it.")
@click.option("--fresh", is_flag=True, help="With --name: replace the named instance with a new one.")
@click.option("--watch/--no-watch", default=True, help="Follow the job (default) or print its id and return.")
@click.option("--ttl", "ttl", metavar="DURATION",
              help="Remove the instance after it had no client connected for this long (90s, 15m, 2h; "
                   "0: never; default: config instance.ttl_seconds).")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def prepare_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
                 from_state: str | None,
                 name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
                 psql_args: tuple[str, ...]) -> None:
    if reuse and fresh:
        raise usage("--reuse and --fresh exclude each other")
    if (reuse or fresh) and not name:
        raise usage("--reuse and --fresh need --name")
    on_name = "reuse" if reuse else "fresh" if fresh else "error"
    body = _prepare_body(psql_args, image, runtime, name, allow_outside, on_name=on_name,
                         ttl_seconds=parse_duration(ttl) if ttl is not None else None, kind=kind,
                         from_state=from_state)
    result = do_prepare(ctx, body, watch)
    if result is not None:
        click.echo(result["dsn"])


@cli.command("plan:psql", context_settings=PASSTHROUGH)
@prepare_options
@click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def plan_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
              from_state: str | None,
              output: str, psql_args: tuple[str, ...]) -> None:
    """Show the step chain PSQL_ARGS describe: state ids, cached or to build. Builds nothing."""
    from sqlrs.entrypoints.cli.watching import NoProgress, watch_job

    body = _prepare_body(psql_args, image, runtime, None, allow_outside, plan_only=True, from_state=from_state)
    submitted, stream = _submit(ctx, body, watch=True)
    result = watch_job(ctx, submitted["job_id"], NoProgress(), stream=stream)
    plan = result.get("plan", [])
    if output == "json":
        emit_json(plan)
        return
    table([[str(s["index"]), s["kind"], s["source"], short(s["state_id"]),
            "cached" if s["cached"] else "pull" if s.get("remote") else "build"]
           for s in plan], ["#", "KIND", "SOURCE", "STATE", "STATUS"])


@cli.command("watch")
@click.argument("job_id")
@click.pass_obj
def watch(ctx: Ctx, job_id: str) -> None:
    """Attach to a prepare job; prints its DSN on stdout when it succeeds."""
    from sqlrs.entrypoints.cli.watching import make_progress, watch_job

    job = ctx.client().call("GET", f"/v1/prepare-jobs/{job_id}")
    result = watch_job(ctx, job["id"], make_progress(ctx.quiet))
    if "dsn" in result:
        click.echo(result["dsn"])
    else:
        emit_json(result)


# -- run -----------------------------------------------------------------------------------------
def do_run(ctx: Ctx, tool: str, instance: str, args: tuple[str, ...], allow_outside: bool) -> int:
    from sqlrs.entrypoints.cli.psqlargs import Workspace, parse_run_args, stdin_script

    workspace = Workspace.detect(allow_outside)
    parsed = parse_run_args(list(args), workspace, tool)
    files = list(parsed.steps)
    tool_args = list(parsed.tool_args)
    if tool == "psql" and not parsed.uses_scripts:
        if os.isatty(0):
            return interactive_psql(ctx, instance, tool_args)
        files.append(stdin_script(workspace))
        tool_args += ["-f", f"@sqlrs-file:{len(files) - 1}"]
    body = {"instance": instance, "tool": tool, "args": tool_args, "files": files}
    response = ctx.client().request("POST", "/v1/runs", body, timeout=None, accept="application/x-ndjson")
    if response.status != 200:
        from sqlrs.entrypoints.cli.client import raise_engine_error

        raise_engine_error(response.status, response.json())
    exit_code = 1
    for item in response.lines():
        if "stream" in item:
            stream = sys.stdout.buffer if item["stream"] == "stdout" else sys.stderr.buffer
            stream.write(item["data"].encode("utf-8", "surrogateescape"))
            stream.flush()
        if "error" in item:
            error = CliError.from_engine(item["error"])
            click.echo(f"sqlrs: error: {error.message}", err=True)
        if "exit_code" in item:
            exit_code = int(item["exit_code"])
    return exit_code


def interactive_psql(ctx: Ctx, instance: str, tool_args: list[str]) -> int:
    """A terminal session: run the local psql against the instance's DSN."""
    import shutil

    data = ctx.client().call("GET", f"/v1/instances/{instance}")
    if data.get("status") == "missing":  # its server vanished: any run restarts it on its data dir
        do_run(ctx, "psql", data["id"], ("-X", "-c", ""), False)
        data = ctx.client().call("GET", f"/v1/instances/{data['id']}")  # its port may have changed
    psql = shutil.which("psql")
    if psql is None:
        raise CliError("psql is not installed here for an interactive session", hint=f"connect with: {data['dsn']}")
    os.execv(psql, [psql, *tool_args, data["dsn"]])


def run_command(tool: str) -> Callable[..., Any]:
    @click.pass_obj
    def command(ctx: Ctx, instance: str | None, allow_outside: bool, tool_args: tuple[str, ...]) -> None:
        if not instance:
            raise usage(f"run:{tool} needs --instance ID|NAME",
                        hint=f"or prepare a throwaway one: sqlrs prepare:psql -- -f x.sql run:{tool} ...")
        sys.exit(do_run(ctx, tool, instance, tool_args, allow_outside))

    command.__doc__ = (
        f"Run {tool} against an instance; output streams, the exit code is {tool}'s.\n\n"
        + ("\b\nExamples:\n  sqlrs run:psql --instance dev -- -c 'select 1'\n"
           "  sqlrs run:psql --instance dev -- -f report.sql\n  echo 'select 1' | sqlrs run:psql --instance dev\n"
           if tool == "psql" else
           "\b\nExamples:\n  sqlrs run:pgbench --instance dev -- -i -s 10\n"
           "  sqlrs run:pgbench --instance dev -- -c 4 -T 30\n")
    )
    command = click.argument("tool_args", nargs=-1, type=click.UNPROCESSED)(command)
    command = click.option("--allow-outside", is_flag=True, help="Allow script files outside the workspace.")(command)
    command = click.option("--instance", help="Instance id, unique id prefix, or name.")(command)
    return cli.command(f"run:{tool}", context_settings=PASSTHROUGH)(command)


run_command("psql")
run_command("pgbench")

from sqlrs.entrypoints.cli.inputs import add_input_commands, capturing  # noqa: E402 - uses the helpers above

add_input_commands(cli)


def composite_prepare(argv: list[str]) -> str | None:
    """The prepare:KIND of a composite `prepare:KIND ... run:TOOL ...`, when argv is one."""
    for index, arg in enumerate(argv):
        if arg.startswith("prepare:"):
            return arg if any(a in RUN_COMMANDS for a in argv[index + 1:]) else None
    return None


def run_composite(argv: list[str]) -> NoReturn:
    """`sqlrs [opts] prepare:KIND ... run:psql ...`: an ephemeral instance, removed afterwards."""
    prepare = composite_prepare(argv) or "prepare:psql"
    split = next(i for i, a in enumerate(argv) if a in RUN_COMMANDS and i > argv.index(prepare))
    prepare_argv, run_argv = argv[:split], argv[split:]

    holder: dict[str, Any] = {}

    @click.pass_obj
    def capture_prepare(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
                        from_state: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool,
                        ttl: str | None, psql_args: tuple[str, ...]) -> None:
        if name:
            raise usage("--name cannot be used with a composite prepare ... run ...: the instance is removed")
        if not watch:
            raise usage("--no-watch cannot be used with a composite prepare ... run ...: the run needs the "
                        "prepared instance", hint="submit the job alone (sqlrs prepare:psql --no-watch -- ...), "
                        "then `sqlrs watch JOB_ID` and `sqlrs run:psql --instance ...`")
        ttl_seconds = parse_duration(ttl) if ttl is not None else None
        if ttl_seconds == 0:
            raise usage("--ttl 0 cannot be used with a composite prepare ... run ...: its instance must expire "
                        "if this command goes away before removing it", hint="give a duration, e.g. --ttl 10m")
        holder["ctx"] = ctx
        # the engine gives the instance a short idle TTL (or --ttl): it is gone even if this CLI
        # detaches, dies or execs an interactive psql before removing it
        holder["body"] = _prepare_body(psql_args, image, runtime, None, allow_outside, ephemeral=True,
                                       ttl_seconds=ttl_seconds, kind=kind, from_state=from_state)

    original = prepare_psql.callback
    prepare_psql.callback = capture_prepare
    try:
        with capturing(holder):  # the other prepare:KIND commands keep their body here
            cli.main(prepare_argv, prog_name="sqlrs", standalone_mode=False)
    finally:
        prepare_psql.callback = original
    ctx: Ctx = holder["ctx"]
    tool = run_argv[0].split(":", 1)[1]
    run_args = run_argv[1:]
    allow_outside = False
    filtered: list[str] = []
    for index, arg in enumerate(run_args):
        if arg == "--instance" or arg.startswith("--instance="):
            raise usage("--instance cannot be used in a composite run: it uses the prepared instance")
        if arg == "--allow-outside" and "--" not in run_args[:index]:
            allow_outside = True
            continue
        filtered.append(arg)
    from sqlrs.entrypoints.cli.watching import Detached

    try:
        result = do_prepare(ctx, holder["body"], watch=True)
    except Detached as detached:
        click.echo(f"detached: job {detached.job_id} keeps running (its steps get cached); the run is skipped "
                   "and the instance the job makes is removed once unused (see --ttl)", err=True)
        sys.exit(0)
    assert result is not None
    instance_id = result["instance_id"]
    code = 1
    try:
        code = do_run(ctx, tool, instance_id, tuple(filtered), allow_outside)
    finally:
        try:
            ctx.client().call("DELETE", f"/v1/instances/{instance_id}?force=true")
        except CliError as exc:
            click.echo(f"sqlrs: warning: could not remove instance {instance_id}: {exc.message}", err=True)
    sys.exit(code)


# -- ls / rm -------------------------------------------------------------------------------------
@cli.command("ls")
@click.option("--states", "what", flag_value="states", help="Cached states.")
@click.option("--instances", "what", flag_value="instances", help="Running copies of states (default).")
@click.option("--names", "what", flag_value="names", help="Names bound to instances.")
@click.option("--jobs", "what", flag_value="jobs", help="Prepare jobs.")
@click.option("--tree", is_flag=True, help="Draw states and their instances as a lineage tree.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--json", "as_json", is_flag=True, help="Same as -o json.")
@click.pass_obj
def ls(ctx: Ctx, what: str | None, tree: bool, output: str, as_json: bool) -> None:
    """List instances (default), states, names or jobs."""
    client = ctx.client()
    json_out = as_json or output == "json"
    if tree:
        states = client.call("GET", "/v1/states")
        instances = client.call("GET", "/v1/instances")
        if json_out:
            emit_json({"states": states, "instances": instances})
        else:
            draw_tree(states, instances)
        return
    what = what or "instances"
    data = client.call("GET", f"/v1/{'prepare-jobs' if what == 'jobs' else what}")
    if json_out:
        emit_json(data)
        return
    if what == "instances":
        table([[i["id"], i.get("name") or "-", short(i["state_id"]), i["runtime"], i["status"], expires(i), i["dsn"]]
               for i in data], ["ID", "NAME", "STATE", "RUNTIME", "STATUS", "EXPIRES", "DSN"])
    elif what == "states":
        table([[short(s["id"]), short(s.get("parent_id")), s["kind"], s["source"], human_bytes(s["size_bytes"]),
                f"{s['build_seconds']}s", str(s.get("hits", 0)), str(s["instances"]), s["last_used_at"][:19]]
               for s in data], ["ID", "PARENT", "KIND", "SOURCE", "SIZE", "BUILD", "HITS", "INSTANCES", "LAST USED"])
    elif what == "names":
        table([[n["name"], n["instance_id"], n["created_at"][:19]] for n in data], ["NAME", "INSTANCE", "CREATED"])
    else:
        table([[j["id"], j["kind"], j["status"], j["created_at"][:19], (j.get("finished_at") or "-")[:19],
                ((j.get("error") or {}).get("message") or "")[:60]] for j in data],
              ["ID", "KIND", "STATUS", "CREATED", "FINISHED", "ERROR"])
    if not data:
        ctx.note(f"no {what}")


def expires(instance: dict[str, Any]) -> str:
    """The EXPIRES column: time left of an idle TTL, 'in use' while clients are connected."""
    if instance.get("pooled"):
        return "pool spare"
    left = instance.get("expires_in_seconds")
    if left is None:
        return "-"
    if instance.get("connections"):
        return f"in use (ttl {int(instance.get('ttl_seconds') or 0)}s)"
    seconds = int(left)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def draw_tree(states: list[dict[str, Any]], instances: list[dict[str, Any]]) -> None:
    children: dict[str | None, list[dict[str, Any]]] = {}
    for state in states:
        children.setdefault(state.get("parent_id"), []).append(state)
    by_state: dict[str, list[dict[str, Any]]] = {}
    for instance in instances:
        by_state.setdefault(instance["state_id"], []).append(instance)

    def walk(state: dict[str, Any], prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└── " if last else "├── ")
        click.echo(f"{prefix}{branch}{short(state['id'])} {state['source']} ({human_bytes(state['size_bytes'])})")
        inner = prefix + ("" if root else ("    " if last else "│   "))
        kids = children.get(state["id"], [])
        leaves = by_state.get(state["id"], [])
        for index, instance in enumerate(leaves):
            is_last = index == len(leaves) - 1 and not kids
            label = f"{instance['id']}" + (f" [{instance['name']}]" if instance.get("name") else "")
            click.echo(f"{inner}{'└── ' if is_last else '├── '}● {label} {instance['status']} :{instance['port']}")
        for index, kid in enumerate(kids):
            walk(kid, inner, index == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)


@cli.command("rm")
@click.argument("ref")
@click.option("--recurse", is_flag=True, help="Also remove states built on it and their instances.")
@click.option("--force", is_flag=True, help="Remove even when clients are connected (an instance) or a "
              "running job uses it (a state).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def rm(ctx: Ctx, ref: str, recurse: bool, force: bool, dry_run: bool, output: str) -> None:
    """Remove an instance (by id, prefix or name) or a state. Idempotent."""
    client = ctx.client()
    instance = _lookup(client, f"/v1/instances/{ref}")
    state = _lookup(client, f"/v1/states/{ref}") if all(c in "0123456789abcdef" for c in ref) else None
    if instance and state:
        raise usage(f"{ref!r} matches both instance {instance['id']} and state {short(state['id'])}",
                    hint="give more characters")
    query = "?" + "&".join(f"{k}=true" for k, v in (("recurse", recurse), ("force", force), ("dry_run", dry_run)) if v)
    if instance:
        flags = "&".join(f"{k}=true" for k, v in (("force", force), ("dry_run", dry_run)) if v)
        try:
            result = client.call("DELETE", f"/v1/instances/{instance['id']}" + (f"?{flags}" if flags else ""))
        except CliError as error:
            if error.code == "in_use":
                refuse_in_use(error)
            raise
    elif state:
        result = client.call("DELETE", f"/v1/states/{state['id']}" + (query if query != "?" else ""))
    else:
        result = {"dry_run": dry_run, "removed": [], "not_found": True}
    if output == "json":
        emit_json(result)
        return
    if result.get("not_found"):
        ctx.note(f"nothing to remove: no instance, name or state matches {ref!r}")
        return
    verb = "would remove" if dry_run else "removed"
    for item in result["removed"]:
        label = item["id"] if item["kind"] == "instance" else short(item["id"])
        click.echo(f"{verb} {item['kind']} {label}" + (f" ({item['name']})" if item.get("name") else ""))
    for item in result.get("refused", []):
        click.echo(f"would refuse to remove {item['kind']} {item['id']}" + (f" ({item['name']})" if item.get("name")
                   else "") + f": {len(item['clients'])} client(s) connected (--force removes it anyway)")
        client_table(item["clients"], err=False)


def client_table(clients: list[dict[str, Any]], err: bool) -> None:
    from sqlrs.entrypoints.cli.fast import client_lines

    for line in client_lines(clients):
        click.echo(line, err=err)


def refuse_in_use(error: CliError) -> NoReturn:
    from sqlrs.entrypoints.cli.fast import refuse_in_use as refuse

    refuse(error)


def _lookup(client: Any, path: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = client.call("GET", path)
        return data
    except CliError as exc:
        if exc.exit_code == 4:
            return None
        if exc.exit_code == EXIT_USAGE and "invalid" in exc.message:
            return None
        raise


# -- status, config, engine ------------------------------------------------------------------------
@cli.command("status")
@click.option("--cache", is_flag=True, help="Include per-state cache details.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--json", "as_json", is_flag=True, help="Same as -o json.")
@click.pass_obj
def status(ctx: Ctx, cache: bool, output: str, as_json: bool) -> None:
    """Engine, runtime, snapshot backend, cache usage and warnings."""
    from sqlrs.entrypoints.cli.fast import status as show_status  # one rendering, with or without Click

    show_status(ctx, cache, output, as_json)


@cli.group("config")
def config_group() -> None:
    """Read and change engine configuration (see `sqlrs config get` for all keys)."""


@config_group.command("get")
@click.argument("key", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def config_get(ctx: Ctx, key: str | None, output: str) -> None:
    """Print one key's value, or every key with its value and source."""
    data = ctx.client().call("GET", "/v1/config")
    if key is not None:
        if key not in data:
            raise usage(f"unknown config key {key!r}", hint="keys: " + ", ".join(sorted(data)))
        click.echo(json.dumps(data[key]["value"]) if output == "json" else str(data[key]["value"]))
        return
    if output == "json":
        emit_json(data)
        return
    table([[k, json.dumps(v["value"]), v["source"]] for k, v in sorted(data.items())], ["KEY", "VALUE", "SOURCE"])


@config_group.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_obj
def config_set(ctx: Ctx, key: str, value: str) -> None:
    """Set KEY to VALUE (sizes like 10G are accepted for byte counts).

    Runtime settings are checked and apply to the next prepare; store and engine settings apply
    when the engine restarts (you are told so).
    """
    _patch_config(ctx, {key: value})


def _patch_config(ctx: Ctx, changes: dict[str, Any]) -> None:
    from sqlrs.entrypoints.cli.client import raise_engine_error

    response = ctx.client().request("PATCH", "/v1/config", changes)
    data = response.json()
    if response.status != 200:
        raise_engine_error(response.status, data)
    waiting = response.headers.get("x-sqlrs-restart-needed")
    if waiting:
        ctx.note(f"note: {waiting} takes effect when the engine restarts: sqlrs engine stop "
                 "(running instances keep running)")


@config_group.command("unset")
@click.argument("key")
@click.pass_obj
def config_unset(ctx: Ctx, key: str) -> None:
    """Return KEY to its default."""
    _patch_config(ctx, {key: None})


cli.add_command(init_group)
cli.add_command(snapshot_command)
cli.add_command(push_cmd)
cli.add_command(pull_cmd)


@cli.group("engine")
def engine_group() -> None:
    """Start, stop or inspect the engine process (it also starts on demand)."""


@engine_group.command("start")
@click.pass_obj
def engine_start(ctx: Ctx) -> None:
    """Start the engine if it is not running; print its endpoint."""
    client = ctx.client()
    client.call("GET", "/v1/health")  # finds or spawns the engine for real
    click.echo(client.endpoint)


@engine_group.command("stop")
@click.pass_obj
def engine_stop(ctx: Ctx) -> None:
    """Stop the engine (running instances keep running and are re-adopted later)."""
    from sqlrs.entrypoints.cli.client import ENGINE_STOP_TIMEOUT, live_engine, shutdown_engine

    info = live_engine(ctx.state_dir)
    if info is None:
        ctx.note("engine is not running")
        return
    pid = int(info.get("pid", 0))
    if not shutdown_engine(ctx.client(spawn=False), pid):
        raise CliError(f"the engine (pid {pid}) did not exit within {ENGINE_STOP_TIMEOUT:.0f}s",
                       hint=f"see {ctx.state_dir / 'engine.log'}; kill it with `kill {pid}`")
    ctx.note(f"engine (pid {pid}) stopped")


@engine_group.command("status")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def engine_status(ctx: Ctx, output: str) -> None:
    """Say whether an engine serves the state directory, without starting one."""
    from sqlrs.entrypoints.cli.client import live_engine

    info = live_engine(ctx.state_dir)
    data = {"running": info is not None, "state_dir": str(ctx.state_dir)}
    if info:
        data.update({k: info[k] for k in ("endpoint", "pid", "version", "instance_id") if k in info})
    if output == "json":
        emit_json(data)
    elif info:
        click.echo(f"running: pid {info['pid']}, {info['endpoint']}, version {info['version']}")
    else:
        click.echo("not running")
    if not info:
        sys.exit(EXIT_ENGINE)


# -- entry point ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if composite_prepare(argv) is not None:
            run_composite(argv)
        cli.main(argv, prog_name="sqlrs", standalone_mode=False)
    except CliError as error:
        fail(error)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        from sqlrs.entrypoints.cli.watching import Detached

        if not isinstance(exc, Detached):
            raise
        click.echo(f"detached: job {exc.job_id} keeps running; attach again with: sqlrs watch {exc.job_id}",
                   err=True)
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)


from sqlrs.entrypoints.cli import lb_cmd  # noqa: E402,F401  (registers prepare:lb, plan:lb)
