"""The `sqlrs` entry point: a stdlib-only fast path for the hot commands, Click for the rest.

Scripts run `status`, `ls`, `rm ID`, `run:psql` and `prepare:psql` (a cache hit) in loops, and
importing Click (plus inspect, typing, datetime, uuid, ... that it pulls in) costs about twice
the interpreter's own start. So `main()` first parses argv against OPTIONS, a copy of those
commands' Click options that tests/unit/test_cli_fast.py checks against the Click commands, and
runs the command's body itself: the same function the Click command calls (listing.py,
running.py, preparing.py), so there is one body per command. It parses only the common,
unambiguous forms; anything else — `--help`, `--version`, an option it does not know or a value
Click would refuse, a composite `prepare:psql ... run:psql ...`, every other command — goes to
the Click CLI in main.py untouched, before anything was sent to the engine or printed. Click
stays the single owner of help and of option parsing errors (tests/integration/test_cli_fast_e2e.py
runs each command both ways). SQLRS_CLI_NO_FAST=1 turns the fast path off
(docs/decisions/0003-cli-fast-path.md).
"""

from __future__ import annotations

import os
import sys

from sqlrs.entrypoints.cli.argv import GLOBAL_OPTIONS, composite_split

TYPE_CHECKING = False  # typing is one of the imports this module exists to avoid
if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlrs.entrypoints.cli.argv import Spec
    from sqlrs.entrypoints.cli.output import Ctx

# -- the option table (checked against the Click commands by tests/unit/test_cli_fast.py) ---------
# spelling -> Spec; the global options are argv.py's

OUTPUT = ("table", "json")
GLOBAL_DEFAULTS: dict[str, object] = {"state_dir": None, "quiet": False, "workspace": None, "timeout": None}

_OUTPUT_OPTIONS: dict[str, Spec] = {"-o": ("output", None, OUTPUT), "--output": ("output", None, OUTPUT)}
# command -> its options handled here
OPTIONS: dict[str, dict[str, Spec]] = {
    "status": {"--cache": ("cache", True, None), **_OUTPUT_OPTIONS, "--json": ("as_json", True, None)},
    "ls": {"--states": ("what", "states", None), "--instances": ("what", "instances", None),
           "--names": ("what", "names", None), "--jobs": ("what", "jobs", None), **_OUTPUT_OPTIONS,
           "--json": ("as_json", True, None)},
    "rm": {**_OUTPUT_OPTIONS},
    "run:psql": {"--instance": ("instance", None, None), "--allow-outside": ("allow_outside", True, None),
                 "--ref": ("ref", None, None), "--ref-mode": ("ref_mode", None, ("worktree", "blob")),
                 "--ref-keep-worktree": ("ref_keep", True, None)},
    "prepare:psql": {
        "--image": ("image", None, None),
        "--runtime": ("runtime", None, "sqlrs.runtimes"),  # sqlrs.extensions.RUNTIMES
        "--allow-outside": ("allow_outside", True, None),
        "--kind": ("kind", None, ("server", "database")),
        "--from": ("from_state", None, None),
        "--ref": ("ref", None, None),
        "--ref-mode": ("ref_mode", None, ("worktree", "blob")),
        "--ref-keep-worktree": ("ref_keep", True, None),
        "--provenance-path": ("provenance", None, None),
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
    "run:psql": {"instance": None, "allow_outside": False, "ref": None, "ref_mode": None, "ref_keep": False},
    "prepare:psql": {"image": None, "runtime": None, "allow_outside": False, "kind": None, "from_state": None,
                     "ref": None, "ref_mode": None, "ref_keep": False, "provenance": None, "name": None,
                     "reuse": False, "fresh": False, "watch": True, "ttl": None},
}
# positional parameters: a fixed list of names, or one name taking everything left (passthrough)
ARGUMENTS: dict[str, tuple[str, ...]] = {"status": (), "ls": (), "rm": ("ref",)}
PASSTHROUGH: dict[str, str] = {"run:psql": "tool_args", "prepare:psql": "psql_args"}
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
    if not value or value.startswith("-") or (choices is not None and value not in _choices(choices)):
        raise Fallback
    values[name] = value
    return index


def _choices(choices: tuple[str, ...] | str) -> tuple[str, ...]:
    if isinstance(choices, tuple):
        return choices
    from sqlrs import extensions  # registered names, from a cache file while nothing was (un)installed

    return ("auto", *extensions.cached_names(choices))


def _known(arg: str, table: dict[str, Spec]) -> Spec | None:
    return table.get(arg.partition("=")[0] if arg.startswith("--") else arg)


def parse(argv: list[str]) -> tuple[str, dict[str, object], dict[str, object]]:
    """(command, global values, command values) for an argv the fast path handles; else Fallback."""
    if composite_split(argv) is not None:
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


# -- streams -------------------------------------------------------------------------------------
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


# -- the commands: their bodies, as the Click commands call them ---------------------------------
def status(ctx: Ctx, cache: bool, output: str, as_json: bool, **_: object) -> None:
    from sqlrs.entrypoints.cli import listing

    listing.status(ctx, cache, output, as_json)


def ls(ctx: Ctx, what: str | None, tree: bool, output: str, as_json: bool, **_: object) -> None:
    from sqlrs.entrypoints.cli import listing

    listing.ls(ctx, what, tree, output, as_json)


def rm(ctx: Ctx, ref: str, recurse: bool, force: bool, dry_run: bool, output: str, **_: object) -> None:
    from sqlrs.entrypoints.cli import listing

    listing.rm(ctx, ref, recurse, force, dry_run, output)


def run_psql(ctx: Ctx, instance: str | None, allow_outside: bool, ref: str | None, ref_mode: str | None,
             ref_keep: bool, tool_args: tuple[str, ...], **_: object) -> None:
    from sqlrs.entrypoints.cli import running

    sys.exit(running.run(ctx, "psql", running.need_instance("psql", instance), tool_args, allow_outside,
                         running.Ref(ref, ref_mode, ref_keep)))


def prepare_psql(ctx: Ctx, image: str | None, runtime: str | None, allow_outside: bool, kind: str | None,
                 from_state: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool,
                 provenance: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool, ttl: str | None,
                 psql_args: tuple[str, ...], **_: object) -> None:
    from sqlrs.entrypoints.cli import preparing

    preparing.prepare(ctx, lambda on_name, ttl_seconds: preparing.psql_body(
        psql_args, image, runtime, name, allow_outside, on_name=on_name, ttl_seconds=ttl_seconds, kind=kind,
        from_state=from_state), name=name, reuse=reuse, fresh=fresh, watch=watch, ttl=ttl,
        stage=preparing.Stage(ref, ref_mode, ref_keep, provenance))


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
    from sqlrs.entrypoints.cli.output import Ctx, guarded

    workspace, timeout = top["workspace"], top["timeout"]
    guarded(lambda: COMMANDS[command](Ctx(state_dir, bool(top["quiet"]), str(workspace) if workspace else None,
                                          str(timeout) if timeout else None), **values))


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
