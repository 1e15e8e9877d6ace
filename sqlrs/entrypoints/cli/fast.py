"""The `sqlrs` entry point: a stdlib-only fast path for the hot commands, Click for the rest.

Scripts run `status`, `ls`, `rm ID`, `run:psql` and `prepare:psql` (a cache hit) in loops, and
importing Click (plus inspect, typing, datetime, uuid, ... that it pulls in) costs about twice
the interpreter's own start. So `main()` first parses argv against OPTIONS, a copy of those
commands' Click options that tests/unit/test_cli_fast.py checks against main.py's definitions,
and runs the command itself. It handles only the common, unambiguous forms; anything else —
`--help`, `--version`, an option it does not know, a usage error, a composite
`prepare:psql ... run:psql ...`, an interactive `run:psql`, every other command — goes to the
Click CLI in main.py untouched, before anything was sent to the engine or printed. Click stays
the single owner of help and usage errors; the output of the commands handled here is
byte-identical to theirs (tests/integration/test_cli_fast.py runs each both ways), so a change
to one of these commands in main.py needs the same change here. SQLRS_CLI_NO_FAST=1 turns
the fast path off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is one of the imports this module exists to avoid
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn, Protocol

    from sqlrs.entrypoints.cli.client import EngineClient
    from sqlrs.entrypoints.cli.errors import CliError

    class HasClient(Protocol):
        """This module's Ctx or main.py's: what the shared command code needs of either."""

        def client(self) -> EngineClient: ...

    # (parameter name, the constant a flag stores or None for an option taking a value,
    #  the choices that value must be one of or None)
    Spec = tuple[str, object, tuple[str, ...] | None]

# -- the option table (checked against the Click commands by tests/unit/test_cli_fast.py) ---------
# spelling -> Spec

OUTPUT = ("table", "json")
GLOBAL_OPTIONS: dict[str, Spec] = {
    "--state-dir": ("state_dir", None, None),
    "-q": ("quiet", True, None),
    "--quiet": ("quiet", True, None),
}
GLOBAL_DEFAULTS: dict[str, object] = {"state_dir": None, "quiet": False}

_OUTPUT_OPTIONS: dict[str, Spec] = {"-o": ("output", None, OUTPUT), "--output": ("output", None, OUTPUT)}
# command -> its options handled here
OPTIONS: dict[str, dict[str, Spec]] = {
    "status": {"--cache": ("cache", True, None), **_OUTPUT_OPTIONS, "--json": ("as_json", True, None)},
    "ls": {"--states": ("what", "states", None), "--instances": ("what", "instances", None),
           "--names": ("what", "names", None), "--jobs": ("what", "jobs", None), **_OUTPUT_OPTIONS,
           "--json": ("as_json", True, None)},
    "rm": {**_OUTPUT_OPTIONS},
    "run:psql": {"--instance": ("instance", None, None), "--allow-outside": ("allow_outside", True, None)},
    "prepare:psql": {
        "--image": ("image", None, None),
        "--runtime": ("runtime", None, ("auto", "docker", "podman", "native")),
        "--allow-outside": ("allow_outside", True, None),
        "--kind": ("kind", None, ("server", "database")),
        "--from": ("from_state", None, None),
        "--name": ("name", None, None),
        "--reuse": ("reuse", True, None),
        "--fresh": ("fresh", True, None),
        "--watch": ("watch", True, None),
        "--no-watch": ("watch", False, None),
        "--ttl": ("ttl", None, None),
    },
}
# every parameter's value when not given (options left to Click included: they stay at this)
DEFAULTS: dict[str, dict[str, object]] = {
    "status": {"cache": False, "output": "table", "as_json": False},
    "ls": {"what": None, "tree": False, "output": "table", "as_json": False},
    "rm": {"recurse": False, "force": False, "dry_run": False, "output": "table"},
    "run:psql": {"instance": None, "allow_outside": False},
    "prepare:psql": {"image": None, "runtime": None, "allow_outside": False, "kind": None, "from_state": None,
                     "name": None,
                     "reuse": False, "fresh": False, "watch": True, "ttl": None},
}
# positional parameters: a fixed list of names, or one name taking everything left (passthrough)
ARGUMENTS: dict[str, tuple[str, ...]] = {"status": (), "ls": (), "rm": ("ref",)}
PASSTHROUGH: dict[str, str] = {"run:psql": "tool_args", "prepare:psql": "psql_args"}
RUN_COMMANDS = ("run:psql", "run:pgbench")  # main.py's: `prepare:psql ... run:*` is a composite


class Fallback(Exception):
    """This argv is for Click: raised only before anything was sent or printed."""


# -- parsing -------------------------------------------------------------------------------------
def _take(spec: Spec, arg: str, args: list[str], index: int, values: dict[str, object]) -> int:
    """Store option `arg` (args[index]) by its spec; the index after it. Odd forms fall back."""
    name, constant, choices = spec
    _, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
    if name in values:
        raise Fallback  # given twice
    if constant is not None:
        if eq:
            raise Fallback  # a flag with a value: Click's error
        values[name] = constant
        return index + 1
    if eq:
        value, index = inline, index + 1
    else:
        if index + 1 >= len(args):
            raise Fallback
        value, index = args[index + 1], index + 2
    if not value or value.startswith("-") or (choices is not None and value not in choices):
        raise Fallback
    values[name] = value
    return index


def _known(arg: str, table: dict[str, Spec]) -> Spec | None:
    return table.get(arg.partition("=")[0] if arg.startswith("--") else arg)


def parse(argv: list[str]) -> tuple[str, dict[str, object], dict[str, object]]:
    """(command, global values, command values) for an argv the fast path handles; else Fallback."""
    if "prepare:psql" in argv and any(a in RUN_COMMANDS for a in argv[argv.index("prepare:psql") + 1:]):
        raise Fallback  # the composite, main.main()'s own
    if "--help" in argv:
        raise Fallback
    top: dict[str, object] = {}
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        spec = _known(argv[index], GLOBAL_OPTIONS)
        if spec is None:
            raise Fallback
        index = _take(spec, argv[index], argv, index, top)
    if index >= len(argv) or argv[index] not in OPTIONS:
        raise Fallback
    command, args = argv[index], argv[index + 1:]
    table = OPTIONS[command]
    values: dict[str, object] = {}
    rest: list[str] = []
    if command in PASSTHROUGH:
        # Click with ignore_unknown_options and no interspersed arguments: known options are taken
        # up to the first plain argument or `--`; unknown ones are kept, in order, for the tool
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest += args[index + 1:]
                break
            if not arg.startswith("-") or arg == "-":
                rest += args[index:]
                break
            spec = _known(arg, table)
            if spec is None:
                rest.append(arg)
                index += 1
            else:
                index = _take(spec, arg, args, index, values)
        values[PASSTHROUGH[command]] = tuple(rest)
    else:
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest += args[index + 1:]
                break
            if arg.startswith("-") and arg != "-":
                spec = _known(arg, table)
                if spec is None:
                    raise Fallback
                index = _take(spec, arg, args, index, values)
            else:
                rest.append(arg)
                index += 1
        names = ARGUMENTS[command]
        if len(rest) != len(names):
            raise Fallback
        values.update(zip(names, rest, strict=True))
    return command, {**GLOBAL_DEFAULTS, **top}, {**DEFAULTS[command], **values}


# -- output as click.echo writes it --------------------------------------------------------------
def echo(message: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    out = message + "\n"
    if "\x1b" in out and not _isatty(stream):  # click strips ANSI escapes when not on a terminal
        import re

        out = re.sub(r"\033\[[0-?]*[ -/]*[@-~]", "", out)
    stream.write(out)
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _streams_as_click_uses_them() -> bool:
    """Click rewraps an ASCII stdout/stderr; leave such a terminal to Click."""
    import codecs

    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            if codecs.lookup(encoding).name == "ascii" or getattr(stream, "errors", None) is None:
                return False
        except LookupError:
            return False
    return True


def emit_json(data: Any) -> None:
    import json

    echo(json.dumps(data, indent=2, default=str))


def fail(error: CliError) -> NoReturn:
    echo(f"sqlrs: error: {error.message}", err=True)
    if error.hint:
        echo(f"hint: {error.hint}", err=True)
    sys.exit(error.exit_code)


def short(identifier: str | None, n: int = 12) -> str:
    return (identifier or "-")[:n]


def table(rows: list[list[str]], headers: list[str]) -> None:
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def human_bytes(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


class Ctx:
    """main.Ctx's part the hot commands use; the state dir stays a string (no pathlib)."""

    def __init__(self, state_dir: str | None, quiet: bool):
        self._state_dir = state_dir
        self.quiet = quiet
        self._client: EngineClient | None = None

    @property
    def state_dir(self) -> str:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir_str

            self._state_dir = default_state_dir_str()
        return self._state_dir

    def client(self, spawn: bool = True) -> EngineClient:
        if self._client is None:
            from sqlrs.entrypoints.cli.client import connect

            self._client = connect(self.state_dir, spawn=spawn)
        return self._client

    def note(self, message: str) -> None:
        if not self.quiet:
            echo(message, err=True)


# -- the commands (main.py's, for the forms parse() accepts) -------------------------------------
def status(ctx: HasClient, cache: bool, output: str, as_json: bool, **_: object) -> None:
    data = ctx.client().call("GET", "/v1/status" + ("?cache=true" if cache else ""))
    if as_json or output == "json":
        emit_json(data)
        return
    engine, runtime, snap, cache_info = data["engine"], data["runtime"], data["snapshot"], data["cache"]
    echo(f"engine:    {engine['version']} pid {engine['pid']}, up {engine['uptime_seconds']}s, "
         f"{engine['running_jobs']} running job(s); state dir {engine['state_dir']}")
    echo(f"runtime:   {runtime.get('name') or 'none'} — {runtime.get('reason')}")
    for probe in data["runtimes"]:
        mark = "ok " if probe["available"] else "no "
        echo(f"           {mark}{probe['name']}: {probe['reason']}")
    echo(f"snapshots: {snap['backend']} at {snap['root']} ({human_bytes(snap['free_bytes'])} free)")
    cap = cache_info.get("max_bytes") or 0
    echo(f"cache:     {cache_info['states']} states, {human_bytes(cache_info['size_bytes'])}"
         + (f" of {human_bytes(cap)}" if cap else " (no cap)") + f"; {data['instances']} instance(s)")
    warm_status(data.get("warm"))
    for warning in data.get("warnings", []):
        echo(f"WARNING:   {warning}", err=True)
    if cache:
        table([[short(s["id"]), s["source"], human_bytes(s["size_bytes"]), f"{s['build_seconds']}s",
                str(s.get("hits", 0)), s["last_used_at"][:19]] for s in data["cache"].get("states_detail", [])],
              ["STATE", "SOURCE", "SIZE", "BUILD", "HITS", "LAST USED"])


def warm_status(warm: dict[str, Any] | None) -> None:
    """The `warm:` lines of `sqlrs status`: started instances kept ready, per state."""
    if not warm:
        return
    if not warm["enabled"]:
        echo("warm:      off (sqlrs config set warm.enabled true)")
        return
    echo(f"warm:      {warm['instances']} instance(s) ready, {warm['starting']} starting, for "
         f"{len(warm['states'])} state(s) (at most {warm['per_state']} per state, {warm['max_states']} "
         f"states, {warm['max_instances']} in all)")
    for item in warm["states"]:
        pool = f", pool of {item['pool_size']}" if item["pool_size"] else ""
        echo(f"           {short(item['state_id'])}: {item['ready']} ready{pool} "
             f"({', '.join(item['instance_ids']) or '-'})")


def expires(instance: dict[str, Any]) -> str:
    if instance.get("pooled"):
        return "pool spare"
    left = instance.get("expires_in_seconds")
    if left is None:
        return "-"
    if instance.get("connections"):
        return f"in use (ttl {int(instance.get('ttl_seconds') or 0)}s)"
    seconds = int(left)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def ls(ctx: Ctx, what: str | None, tree: bool, output: str, as_json: bool, **_: object) -> None:
    if tree:
        raise Fallback  # not in the table: never here
    client = ctx.client()
    json_out = as_json or output == "json"
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


def rm(ctx: Ctx, ref: str, recurse: bool, force: bool, dry_run: bool, output: str, **_: object) -> None:
    if recurse or force or dry_run:
        raise Fallback  # not in the table: never here
    from sqlrs.entrypoints.cli.errors import usage

    client = ctx.client()
    instance = _lookup(client, f"/v1/instances/{ref}")
    state = _lookup(client, f"/v1/states/{ref}") if all(c in "0123456789abcdef" for c in ref) else None
    if instance and state:
        raise usage(f"{ref!r} matches both instance {instance['id']} and state {short(state['id'])}",
                    hint="give more characters")
    if instance:
        from sqlrs.entrypoints.cli.errors import CliError

        try:
            result = client.call("DELETE", f"/v1/instances/{instance['id']}")
        except CliError as error:
            if error.code == "in_use":
                refuse_in_use(error)
            raise
    elif state:
        result = client.call("DELETE", f"/v1/states/{state['id']}")
    else:
        result = {"dry_run": False, "removed": [], "not_found": True}
    if output == "json":
        emit_json(result)
        return
    if result.get("not_found"):
        ctx.note(f"nothing to remove: no instance, name or state matches {ref!r}")
        return
    for item in result["removed"]:
        label = item["id"] if item["kind"] == "instance" else short(item["id"])
        echo(f"removed {item['kind']} {label}" + (f" ({item['name']})" if item.get("name") else ""))


def client_lines(clients: list[dict[str, Any]]) -> list[str]:
    """Connected clients, one per line: pid, user, application, address, connected since."""
    return [f"  pid {c['pid']}  user {c.get('user') or '-'}  application {c.get('application_name') or '-'}"
            f"  from {c.get('client_addr') or 'local socket'}  since {(c.get('backend_start') or '-')[:19]}"
            for c in clients]


def refuse_in_use(error: CliError) -> NoReturn:
    """`rm INSTANCE` with clients connected: exit 1, the clients listed under the error line."""
    echo(f"sqlrs: error: {error.message}", err=True)
    for line in client_lines(error.details.get("clients") or []):
        echo(line, err=True)
    if error.hint:
        echo(f"hint: {error.hint}", err=True)
    sys.exit(error.exit_code)


def _lookup(client: EngineClient, path: str) -> dict[str, Any] | None:
    from sqlrs.entrypoints.cli.errors import EXIT_USAGE, CliError

    try:
        data: dict[str, Any] = client.call("GET", path)
        return data
    except CliError as exc:
        if exc.exit_code == 4:
            return None
        if exc.exit_code == EXIT_USAGE and "invalid" in exc.message:
            return None
        raise


def run_psql(ctx: Ctx, instance: str | None, allow_outside: bool, tool_args: tuple[str, ...], **_: object) -> None:
    if not instance:
        raise Fallback  # Click's usage error
    from sqlrs.entrypoints.cli.errors import CliError
    from sqlrs.entrypoints.cli.psqlargs import Workspace, parse_run_args, stdin_script

    workspace = Workspace.detect(allow_outside)
    parsed = parse_run_args(list(tool_args), workspace, "psql")
    files = list(parsed.steps)
    args = list(parsed.tool_args)
    if not parsed.uses_scripts:
        if os.isatty(0):
            raise Fallback  # an interactive psql session: main.py's
        files.append(stdin_script(workspace))
        args += ["-f", f"@sqlrs-file:{len(files) - 1}"]
    body = {"instance": instance, "tool": "psql", "args": args, "files": files}
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
            echo(f"sqlrs: error: {error.message}", err=True)
        if "exit_code" in item:
            exit_code = int(item["exit_code"])
    sys.exit(exit_code)


def _duration(text: str) -> int:
    """main.parse_duration for the forms it accepts; anything else is Click's (its error)."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = units.get(value[-1:], 0)
    number = value[:-1] if factor else value
    if not number.isdigit():
        raise Fallback
    return int(number) * (factor or 1)


def prepare_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
                 from_state: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
                 psql_args: tuple[str, ...], **_: object) -> None:
    if (reuse and fresh) or ((reuse or fresh) and not name):
        raise Fallback  # Click's usage errors
    ttl_seconds = _duration(ttl) if ttl is not None else None
    from sqlrs.entrypoints.cli.psqlargs import Workspace, parse_prepare_args

    parsed = parse_prepare_args(list(psql_args), Workspace.detect(allow_outside))
    if not parsed.steps and not from_state:
        raise Fallback  # "nothing to prepare"
    body: dict[str, Any] = {
        "steps": parsed.steps,
        "options": {"variables": [list(v) for v in parsed.variables], "single_transaction": parsed.single_transaction},
        "runtime": runtime, "image": image, "name": name, "plan_only": False, "ephemeral": False,
        "on_name": "reuse" if reuse else "fresh" if fresh else "error",
    }
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if kind is not None:
        body["instance_kind"] = kind
    if from_state:
        body["from_state"] = from_state
    from sqlrs.entrypoints.cli.watching import Detached

    try:
        result = _do_prepare(ctx, body, watch)
    except Detached as exc:  # main.main()'s answer to it
        echo(f"detached: job {exc.job_id} keeps running; attach again with: sqlrs watch {exc.job_id}", err=True)
        sys.exit(0)
    if result is not None:
        echo(result["dsn"])


def _lean(body: dict[str, Any]) -> dict[str, Any]:
    """The request with every step as its content digest only: enough when the chain is cached."""
    from sqlrs.domain.scripts import content_digest, normalized_content

    steps = []
    for step in body["steps"]:
        if "run" in step:  # host kinds (alembic, exec): the CLI hashed what keys them when it read them
            steps.append({"kind": step["kind"], "source": step["source"], "digest": step["digest"]})
            continue
        if step["kind"] == "command":
            text = step["sql"]
        else:
            text = normalized_content([(f["content"], [(i["line"], i["file"]) for i in f["includes"]])
                                       for f in step["files"]])
        steps.append({"kind": step["kind"], "source": step["source"], "digest": content_digest(text)})
    return {**body, "steps": steps}


def _post_job(ctx: HasClient, body: dict[str, Any], watch: bool) -> tuple[dict[str, Any], Any]:
    """POST a job: (the created job, the open event stream when `watch`)."""
    client = ctx.client()
    if not watch:
        data: dict[str, Any] = client.call("POST", "/v1/prepare-jobs", body)
        return data, None
    response = client.request("POST", "/v1/prepare-jobs?watch=true", body, timeout=None,
                              accept="application/x-ndjson")
    if response.status != 201:
        from sqlrs.entrypoints.cli.client import raise_engine_error

        raise_engine_error(response.status, response.json())
    created = next(response.lines())  # the rest of the stream is the job's events
    return created, response


def _submit(ctx: HasClient, body: dict[str, Any], watch: bool = False) -> tuple[dict[str, Any], Any]:
    """Submit a job; scripts travel only when the engine says it has to build from them.
    (Shared with main.py's commands and the other input kinds: one request protocol.)"""
    from sqlrs.entrypoints.cli.errors import CliError

    if body["steps"]:
        try:
            return _post_job(ctx, _lean(body), watch)
        except CliError as error:
            if error.code != "content_required":
                raise
    return _post_job(ctx, body, watch)


def _do_prepare(ctx: Ctx, body: dict[str, Any], watch: bool) -> dict[str, Any] | None:
    from sqlrs.entrypoints.cli.errors import CliError

    submitted, stream = _submit(ctx, body, watch)
    job_id = submitted["job_id"]
    if not watch:
        echo(job_id)
        echo(submitted["status_url"])
        echo(submitted["events_url"])
        return None
    from sqlrs.entrypoints.cli.watching import make_progress, watch_job

    try:
        return watch_job(ctx, job_id, make_progress(ctx.quiet), stream=stream)
    except CliError as error:
        if error.code != "content_required":
            raise
        full = ctx.client().call("POST", "/v1/prepare-jobs", body)
        return watch_job(ctx, full["job_id"], make_progress(ctx.quiet))


COMMANDS: dict[str, Callable[..., None]] = {"status": status, "ls": ls, "rm": rm, "run:psql": run_psql,
                                             "prepare:psql": prepare_psql}


# -- entry point ---------------------------------------------------------------------------------
def run_fast(argv: list[str]) -> None:
    """Run argv on the fast path; Fallback (before any output or request) when it is Click's."""
    command, top, values = parse(argv)
    state_dir = top["state_dir"]
    if state_dir is not None:  # else SQLRS_STATE_DIR or the default, as main.Ctx finds it
        state_dir = os.path.join(os.getcwd(), str(state_dir))  # as Path.absolute(): joined, not resolved
    if not _streams_as_click_uses_them():
        raise Fallback
    ctx = Ctx(state_dir, bool(top["quiet"]))
    from sqlrs.entrypoints.cli.errors import CliError

    try:
        COMMANDS[command](ctx, **values)
    except CliError as error:
        fail(error)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """The `sqlrs` console script and `python -m sqlrs`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("SQLRS_CLI_NO_FAST", "") in ("", "0"):
        try:
            run_fast(args)
            return
        except Fallback:
            pass
    from sqlrs.entrypoints.cli.main import main as click_main

    click_main(args)
