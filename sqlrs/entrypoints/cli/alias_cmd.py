"""Alias mode (aliases.py): `sqlrs plan REF`, `prepare REF`, `run REF --instance X`, and
`sqlrs alias ls|check|create`.

An alias stage is its raw command with the alias file's kind, image and args (paths made
absolute from the alias file's directory): everything else (jobs, watching, composites, --ref,
--provenance-path) is the raw command's (preparing.py, running.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from sqlrs.engine_client import jobs
from sqlrs.engine_client.errors import ClientError, usage
from sqlrs.entrypoints.cli import aliases, preparing, running
from sqlrs.entrypoints.cli.options import instance_options, kind_option, output_option, ref_options, stage_options
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json, table


def workspace_root() -> Path:
    from sqlrs.engine_client.workspace import find_root

    return Path(find_root(os.getcwd()))


def load_alias(ref: str, cls: str) -> aliases.Alias:
    """The alias `ref` names, from the current directory (inside a --ref checkout: the revision's)."""
    path, found = aliases.resolve(ref, cls, Path.cwd(), workspace_root())
    return aliases.load(path, found)


def chain_body(ctx: Ctx, alias: aliases.Alias, runtime: str | None, **fields: Any) -> dict[str, Any]:
    """The prepare job the prepare alias stands for: its kind's own reading of its args."""
    from sqlrs.entrypoints.cli.lb_cmd import lb_body

    args = tuple(alias.command_args())
    if alias.kind == "psql":
        plan_only = bool(fields.pop("plan_only", False))
        renamed = {("kind" if key == "instance_kind" else key): value for key, value in fields.items()}
        return preparing.psql_body(args, alias.image, runtime, renamed.pop("name", None), False, plan_only=plan_only,
                                   **renamed)
    if alias.kind == "lb":
        return lb_body(ctx, args, alias.image, runtime, False, **fields)
    from sqlrs.entrypoints.cli.inputs import _steps

    root = click.get_current_context().find_root().command
    assert isinstance(root, click.Group)
    command = root.commands[f"prepare:{alias.kind}"]
    with command.make_context(f"prepare:{alias.kind}", list(args)) as parsed:
        params = {**parsed.params, "base_dir": str(alias.base_dir)}
    return jobs.job_body({"steps": _steps(alias.kind, params)}, runtime=runtime, image=alias.image, **fields)


def _shown(alias: aliases.Alias) -> str:
    return os.path.relpath(alias.path, workspace_root())


PREPARE_HELP = """Build (or reuse) the state a prepare alias describes and start an instance of it.

\b
REF names ./REF.prep.s9s.yaml (relative to the current directory; `REF.` names a file exactly).
The alias gives the kind, the image and the arguments; paths in it are relative to the alias
file. Prints exactly one line on stdout: the DSN.

\b
Examples:
  sqlrs prepare chinook
  sqlrs prepare chinook run:psql -- -c 'select count(*) from album'
  sqlrs prepare --ref HEAD~1 chinook
"""

runtime_option = click.option("--runtime", type=click.Choice(["auto", "docker", "podman", "native"]),
                              help="Where PostgreSQL runs (default: config container.runtime, else auto).")


@click.command("prepare", help=PREPARE_HELP)
@runtime_option
@kind_option
@stage_options
@instance_options
@click.argument("alias_ref", metavar="REF")
@click.pass_obj
def prepare_alias(ctx: Ctx, runtime: str | None, kind: str | None, ref: str | None, ref_mode: str | None,
                  ref_keep: bool, provenance: str | None, name: str | None, reuse: bool, fresh: bool, watch: bool,
                  ttl: str | None, alias_ref: str) -> None:
    stage = preparing.Stage(ref, ref_mode, ref_keep, provenance)

    def build(on_name: str, ttl_seconds: int | None) -> dict[str, Any]:
        alias = load_alias(alias_ref, aliases.PREPARE)
        stage.alias = _shown(alias)
        return chain_body(ctx, alias, runtime, name=name, on_name=on_name, ttl_seconds=ttl_seconds,
                          instance_kind=kind)

    preparing.prepare(ctx, build, name=name, reuse=reuse, fresh=fresh, watch=watch, ttl=ttl, stage=stage)


@click.command("plan")
@runtime_option
@stage_options
@output_option
@click.argument("alias_ref", metavar="REF")
@click.pass_obj
def plan_alias(ctx: Ctx, runtime: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool,
               provenance: str | None, output: str, alias_ref: str) -> None:
    """Show the chain a prepare alias (./REF.prep.s9s.yaml) describes: state ids, cached or to
    build. Builds nothing."""
    stage = preparing.Stage(ref, ref_mode, ref_keep, provenance)

    def build() -> dict[str, Any]:
        alias = load_alias(alias_ref, aliases.PREPARE)
        stage.alias = _shown(alias)
        return chain_body(ctx, alias, runtime, plan_only=True)

    preparing.plan(ctx, build, output, stage)


@click.command("run")
@click.option("--instance", help="Instance id, unique id prefix, or name.")
@ref_options
@click.argument("alias_ref", metavar="REF")
@click.pass_obj
def run_alias(ctx: Ctx, instance: str | None, ref: str | None, ref_mode: str | None, ref_keep: bool,
              alias_ref: str) -> None:
    """Run the tool a run alias (./REF.run.s9s.yaml) describes against an instance; its output
    streams, the exit code is the tool's.

    \b
    Examples:
      sqlrs run smoke --instance dev
      sqlrs prepare chinook run smoke        # on a throwaway instance
    """
    from sqlrs.entrypoints.cli.gitref import checkout

    if not instance:
        raise usage(f"run {alias_ref} needs --instance ID|NAME",
                    hint=f"or on a throwaway instance: sqlrs prepare REF run {alias_ref}")
    target = instance
    with checkout(ref, ref_mode, ref_keep, note=ctx.note):
        alias = load_alias(alias_ref, aliases.RUN)
        code = running.run(ctx, alias.kind, target, tuple(alias.command_args()), False)
    sys.exit(code)


def run_stage(argv: list[str]) -> tuple[str, tuple[str, ...]]:
    """A composite's run stage `run REF` (argv after `run`): (tool, its arguments)."""
    refs = [arg for arg in argv if not arg.startswith("-")]
    for arg in argv:
        if arg == "--instance" or arg.startswith("--instance="):
            raise usage("--instance cannot be used in a composite run: it uses the prepared instance")
        if arg.startswith("--ref"):
            raise usage("--ref cannot be used with a composite prepare ... run ... yet")
        if arg.startswith("-"):
            raise usage(f"run REF takes no option {arg} in a composite", hint="the run alias holds the arguments")
    if len(refs) != 1:
        raise usage("run REF takes one alias ref and nothing else", hint="the run alias holds the arguments")
    alias = load_alias(refs[0], aliases.RUN)
    return alias.kind, tuple(alias.command_args())


# -- alias ls | check | create -----------------------------------------------------------------------
@click.group("alias")
def alias_group() -> None:
    """Inspect and create alias files (*.prep.s9s.yaml, *.run.s9s.yaml)."""


def _classes(prepare: bool, run: bool) -> tuple[str, ...]:
    chosen = tuple(cls for cls, on in ((aliases.PREPARE, prepare), (aliases.RUN, run)) if on)
    return chosen or (aliases.PREPARE, aliases.RUN)


def _scan_root(origin: str, root: Path) -> Path:
    cwd = Path.cwd()
    start = root if origin == "workspace" else cwd if origin == "cwd" else (cwd / origin)
    if not aliases.inside(start, root):
        raise usage(f"--from {origin}: outside the workspace {root}")
    if not start.is_dir():
        raise usage(f"--from {origin}: no such directory")
    return Path(os.path.normpath(start))


scan_options = [
    click.option("--prepare", "only_prepare", is_flag=True, help="Prepare aliases only."),
    click.option("--run", "only_run", is_flag=True, help="Run aliases only."),
    click.option("--from", "origin", default="cwd", show_default=True, metavar="workspace|cwd|PATH",
                 help="Where the scan starts."),
    click.option("--depth", type=click.Choice(["self", "children", "recursive"]), default="recursive",
                 show_default=True, help="How far below it."),
]


def _with(options: list[Any]) -> Any:
    def wrap(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


@alias_group.command("ls")
@_with(scan_options)
@output_option
def alias_ls(only_prepare: bool, only_run: bool, origin: str, depth: str, output: str) -> None:
    """List alias files: type, ref (from the current directory), file (from the workspace root), kind."""
    root = workspace_root()
    rows = []
    for path, cls in aliases.scan(_scan_root(origin, root), depth, _classes(only_prepare, only_run)):
        kind, error = aliases.peek_kind(path)
        entry: dict[str, Any] = {"type": cls, "ref": aliases.ref_of(path, Path.cwd(), cls),
                                 "file": os.path.relpath(path, root), "kind": kind,
                                 "status": "ok" if error is None else "invalid"}
        if error is not None:
            entry["error"] = error
        rows.append(entry)
    shown = [[str(r["type"]), str(r["ref"]), str(r["file"]), str(r["kind"] or "-"), str(r["status"]).upper()]
             for r in rows]
    if output == "json":
        emit_json(rows)
        return
    table(shown, ["TYPE", "REF", "FILE", "KIND", "STATUS"])


@alias_group.command("check")
@_with(scan_options)
@output_option
@click.argument("alias_ref", metavar="[REF]", required=False)
@click.pass_context
def alias_check(click_ctx: click.Context, only_prepare: bool, only_run: bool, origin: str, depth: str, output: str,
                alias_ref: str | None) -> None:
    """Check alias files statically (YAML, fields, kind, the files they name exist inside the
    workspace): every one below --from, or the one REF names. No engine, no tools. Exit 1 when
    one is invalid."""
    root = workspace_root()
    if alias_ref is not None:
        given = {p.name for p in click_ctx.command.params
                 if click_ctx.get_parameter_source(str(p.name)) == click.core.ParameterSource.COMMANDLINE}
        if given & {"origin", "depth"}:
            raise usage("--from and --depth scan; with REF one alias is checked")
        cls = aliases.PREPARE if only_prepare and not only_run else aliases.RUN if only_run and not only_prepare \
            else None
        targets = [aliases.resolve(alias_ref, cls, Path.cwd(), root)]
    else:
        targets = aliases.scan(_scan_root(origin, root), depth, _classes(only_prepare, only_run))
    results = []
    for path, cls in targets:
        kind, problems = aliases.check(path, cls, root)
        result: dict[str, Any] = {"type": cls, "ref": aliases.ref_of(path, Path.cwd(), cls),
                                  "file": os.path.relpath(path, root), "kind": kind, "valid": not problems}
        if problems:
            result["error"] = problems[0]
            result["issues"] = problems
        results.append(result)
    invalid = sum(1 for r in results if not r["valid"])
    report = {"checked": len(results), "valid": len(results) - invalid, "invalid": invalid, "results": results}
    if output == "json":
        emit_json(report)
    else:
        table([["VALID" if r["valid"] else "INVALID", str(r["type"]), str(r["ref"]), str(r["file"]),
                str(r["kind"] or "-"), str(r.get("error", "-"))] for r in results],
              ["STATUS", "TYPE", "REF", "FILE", "KIND", "ERROR"])
        echo(f"checked={report['checked']} valid={report['valid']} invalid={report['invalid']}")
    if invalid:
        sys.exit(1)


@alias_group.command("create", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("alias_ref", metavar="REF")
@click.argument("wrapped", nargs=-1, type=click.UNPROCESSED, required=True)
@output_option
def alias_create(alias_ref: str, wrapped: tuple[str, ...], output: str) -> None:
    """Write REF.prep.s9s.yaml (or REF.run.s9s.yaml) for a command:

    \b
      sqlrs alias create chinook prepare:psql -- -f chinook/prepare.sql
      sqlrs alias create app prepare:lb -- update --changelog-file db/master.xml
      sqlrs alias create smoke run:psql -- -f queries/smoke.sql
    Paths in it are written relative to the alias file; an existing file is not overwritten."""
    command, args = wrapped[0], list(wrapped[1:])
    cls, _, kind = command.partition(":")
    if cls not in (aliases.PREPARE, aliases.RUN) or kind not in aliases.KINDS[cls]:
        raise usage(f"alias create wraps prepare:KIND or run:KIND, not {command!r}",
                    hint="kinds: prepare:" + "|".join(aliases.KINDS[aliases.PREPARE]) + ", run:"
                         + "|".join(aliases.KINDS[aliases.RUN]))
    image = None
    while args and args[0] != "--" and args[0].startswith("--image"):
        if args[0] == "--image":
            if len(args) < 2:
                raise usage("--image needs a value")
            image, args = args[1], args[2:]
        else:
            image, args = args[0].split("=", 1)[1], args[1:]
    if image and cls == aliases.RUN:
        raise usage("a run alias takes no --image")
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise usage(f"{command}: give the arguments the alias stands for (after --)")
    cwd, root = Path.cwd(), workspace_root()
    target = Path(os.path.normpath(cwd / (alias_ref.rstrip(".") if alias_ref.endswith(".")
                                          else alias_ref + aliases.SUFFIXES[cls])))
    if not aliases.inside(target, root):
        raise usage(f"{alias_ref}: outside the workspace {root}")
    if target.exists():
        raise ClientError(f"{os.path.relpath(target, cwd)} exists: not overwritten", hint="remove it first")
    written = aliases.relativize(cls, kind, args, cwd, target.parent)
    candidate = aliases.Alias(cls, target, kind, image, written)
    problems = [f"referenced path not found: {given}" for given, path, _ in aliases.referenced_paths(candidate)
                if not path.exists()]
    if problems:
        raise usage(problems[0], hint="paths in the command are relative to the current directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(aliases.render(kind, image, written), encoding="utf-8")
    result = {"file": os.path.relpath(target, root), "type": cls, "ref": aliases.ref_of(target, cwd, cls),
              "kind": kind, "image": image, "args": written}
    if output == "json":
        emit_json(result)
        return
    echo(f"created alias file: {result['file']}")
    echo(f"type: {cls}")
    echo(f"ref: {result['ref']}")
    echo(f"kind: {kind}")
    if image:
        echo(f"image: {image}")
