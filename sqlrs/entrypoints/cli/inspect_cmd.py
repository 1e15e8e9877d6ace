"""`sqlrs cache explain` and `sqlrs diff`: what a prepare (or plan) command would read, looked at
without running it.

Both wrap a command in the main CLI's own syntax (`prepare:KIND ...`, `prepare REF`, ...). The
wrapped command is parsed and read by its own Click command, which hands its job to a
`preparing.Composite` instead of submitting it, exactly as the prepare half of a composite does;
so what is explained or compared is what the command would really send.

- `cache explain`: the job as a plan with `explain` (services/states/explain.py): per state, cached or
  not and why (the input that changed against the state built on the same parent, the runtime
  identity, the psql options).
- `diff`: the files the command reads (its input closure: `-f` files and what they include, the
  changelogs and the files changesets load, Alembic revisions with env.py and alembic.ini, exec's
  declared inputs) on two sides, two Git revisions or two directories; added, modified, removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from sqlrs.engine_client import jobs
from sqlrs.engine_client.errors import usage
from sqlrs.entrypoints.cli import preparing
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json, short, table

WRAP = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def capture(ctx: Ctx, wrapped: tuple[str, ...], purpose: str, allowed: tuple[str, ...],
            inspect: Any = None) -> preparing.Composite:
    """Run the wrapped command far enough to have its job (and `inspect` it while its files are there)."""
    if not wrapped or not any(wrapped[0] == name or wrapped[0].startswith(name + ":") for name in allowed):
        raise usage(f"{purpose} wraps a command: " + " | ".join(f"{name}:KIND ..., {name} REF" for name in allowed),
                    hint=f"e.g. sqlrs {purpose} {allowed[0]}:psql -- -f schema.sql")
    root = click.get_current_context().find_root().command
    composite = preparing.Composite(purpose, inspect)
    argv = ["--state-dir", str(ctx.state_dir), *(["-q"] if ctx.quiet else []), *wrapped]
    root.main(argv, prog_name="sqlrs", standalone_mode=False, obj=composite)
    if composite.body is None:
        sys.exit(0)  # the wrapped command only showed its --help
    return composite


# -- cache explain ---------------------------------------------------------------------------------
@click.group("cache")
def cache_group() -> None:
    """Look at cache decisions."""


@cache_group.command("explain", context_settings=WRAP)
@click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
@click.argument("wrapped", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def cache_explain(ctx: Ctx, output: str, wrapped: tuple[str, ...]) -> None:
    """Say, for every state the wrapped prepare would use, whether it is cached and why not:
    which input changed against the state built on the same parent, another runtime identity
    (PostgreSQL build, image, major, bootstrap superuser), other psql options. Builds nothing.

    \b
    Examples:
      sqlrs cache explain prepare:psql -- -f schema.sql -f seed.sql
      sqlrs cache explain prepare chinook
      sqlrs cache explain -o json prepare --ref HEAD~1 chinook
    """
    composite = capture(ctx, wrapped, "cache explain", ("prepare",))
    assert composite.body is not None
    body = {key: value for key, value in composite.body.items()
            if key not in ("name", "on_name", "ttl_seconds", "ephemeral", "instance_kind")}
    submitted, stream = jobs.post_job(ctx.client(), {**body, "plan_only": True, "explain": True}, watch=True)
    from sqlrs.entrypoints.cli.watching import watch_job

    result = watch_job(ctx, submitted["job_id"], jobs.NoProgress(), stream=stream)
    rows = result.get("explain", [])
    report = {"decision": "hit" if rows and all(r["cached"] for r in rows) else "miss",
              "runtime": result.get("runtime"), "identity": result.get("identity"), "steps": rows}
    if output == "json":
        emit_json(report)
        return
    echo(f"decision: {report['decision']}")
    echo(f"runtime: {report['runtime']} ({report['identity']})")
    table([[str(r["index"]), r["kind"], r["source"], short(r["state_id"]), "cached" if r["cached"] else "build",
            r["reason"]] for r in rows], ["#", "KIND", "SOURCE", "STATE", "STATUS", "WHY"])


# -- diff --------------------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def closure(body: dict[str, Any]) -> dict[str, str]:
    """The files the job's steps were read from, relative to the current directory: sha256 each."""
    files: dict[str, str] = {}
    cwd = Path.cwd()

    def add(path: Path | str, digest: str | None = None) -> None:
        absolute = Path(path) if os.path.isabs(path) else cwd / path
        if digest is None:
            try:
                digest = _sha(absolute.read_bytes())
            except OSError:
                return
        files[os.path.relpath(absolute, cwd)] = digest

    for step in body.get("steps", []):
        kind = step.get("kind")
        if kind == "file":
            for item in step.get("files", []):
                if item["path"] != "<stdin>":
                    add(item["path"], _sha(item["content"].encode("utf-8", "surrogateescape")))
        elif kind == "exec":
            for name, value in step.get("keyed", []):
                if name.startswith("input:"):
                    add(Path(step["run"]["cwd"]) / name[len("input:"):], value)
        elif kind == "alembic":
            params = dict(step["run"]["params"])
            keyed = dict(step.get("keyed", []))
            revision = Path(step["run"]["cwd"]) / params["file"]
            add(revision, keyed.get("revision_file"))
            add(params["config"])
            add(revision.parent.parent / "env.py")
        elif kind == "liquibase":
            files.update(_changelog_files(dict(step["run"]["params"]), cwd))
    return files


def _changelog_files(params: dict[str, str], cwd: Path) -> dict[str, str]:
    from sqlrs.changelogs import liquibase as changelogs
    from sqlrs.changelogs import liquibase_install as install

    root = Path(params["search_path"])
    project = changelogs.read_project(params["changelog"], *install.disk_reader(root))
    return {os.path.relpath(root / item.path, cwd): _sha(item.content.encode("utf-8", "surrogateescape"))
            for item in project.files}


@contextlib.contextmanager
def _in_directory(path: str) -> Iterator[str]:
    """Work in `path` (a side of `diff --from-path/--to-path`), as the workspace root."""
    from sqlrs.engine_client.workspace import ENV_WORKSPACE

    target = os.path.abspath(path)
    if not os.path.isdir(target):
        raise usage(f"{path}: no such directory")
    cwd, old = os.getcwd(), os.environ.get(ENV_WORKSPACE)
    os.environ[ENV_WORKSPACE] = target
    os.chdir(target)
    try:
        yield target
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop(ENV_WORKSPACE, None)
        else:
            os.environ[ENV_WORKSPACE] = old


@click.command("diff", context_settings=WRAP)
@click.option("--from-ref", metavar="GIT_REF", help="The left side: a Git revision.")
@click.option("--to-ref", metavar="GIT_REF", help="The right side: a Git revision.")
@click.option("--from-path", metavar="DIR", help="The left side: a directory.")
@click.option("--to-path", metavar="DIR", help="The right side: a directory.")
@click.option("--ref-mode", type=click.Choice(["worktree", "blob"]), help="How revisions are read (see --ref).")
@click.option("--ref-keep-worktree", "ref_keep", is_flag=True, help="Keep the temporary worktrees.")
@click.option("--include-content", is_flag=True, help="Show the files' text (added, removed: whole; modified: both).")
@click.option("--limit", type=click.IntRange(min=1), help="List at most N entries per section (counts stay whole).")
@click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
@click.argument("wrapped", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def diff(ctx: Ctx, from_ref: str | None, to_ref: str | None, from_path: str | None, to_path: str | None,
         ref_mode: str | None, ref_keep: bool, include_content: bool, limit: int | None, output: str,
         wrapped: tuple[str, ...]) -> None:
    """Compare the files a plan or prepare command reads between two Git revisions or two
    directories: added, modified, removed (by sha256). The wrapped command is written as for a
    real run, read on each side from the same current directory (projected into each revision,
    or each directory as the workspace). Runs nothing, needs no engine.

    \b
    Examples:
      sqlrs diff --from-ref HEAD~1 --to-ref HEAD plan:psql -- -f schema.sql
      sqlrs diff --from-ref origin/main --to-ref HEAD prepare:lb -- update --changelog-file db/master.xml
      sqlrs diff --from-path ./left --to-path ./right -o json prepare:psql -- -f prepare.sql
    """
    refs, paths = (from_ref, to_ref), (from_path, to_path)
    if (any(refs) and any(paths)) or not (all(refs) or all(paths)):
        raise usage("give --from-ref and --to-ref, or --from-path and --to-path",
                    hint="e.g. sqlrs diff --from-ref HEAD~1 --to-ref HEAD plan:psql -- -f schema.sql")
    if any(paths) and (ref_mode or ref_keep):
        raise usage("--ref-mode and --ref-keep-worktree go with --from-ref/--to-ref")
    contents: dict[str, dict[str, bytes]] = {}
    sides: list[dict[str, str]] = []
    scope: dict[str, Any] = ({"mode": "ref", "from": from_ref, "to": to_ref, "ref_mode": ref_mode or "worktree"}
                             if all(refs) else {"mode": "path", "from": from_path, "to": to_path})
    for side, target in (("from", from_ref or from_path), ("to", to_ref or to_path)):
        assert target is not None
        seen: dict[str, bytes] = {}

        def inspect(body: dict[str, Any], seen: dict[str, bytes] = seen) -> dict[str, str]:
            found = closure(body)
            if include_content:
                for path in found:
                    with contextlib.suppress(OSError):
                        seen[path] = Path(path).read_bytes()
            return found

        if scope["mode"] == "ref":
            from sqlrs.entrypoints.cli.gitref import checkout

            with checkout(target, ref_mode, ref_keep, note=ctx.note) as source:
                assert source is not None
                scope[f"{side}_commit"] = source.commit
                composite = capture(ctx, wrapped, "diff", ("plan", "prepare"), inspect)
        else:
            with _in_directory(target):
                composite = capture(ctx, wrapped, "diff", ("plan", "prepare"), inspect)
        sides.append(composite.seen)
        contents[side] = seen
    report = compare(sides[0], sides[1], limit, contents if include_content else None)
    report = {"scope": scope, "command": list(wrapped), **report}
    if output == "json":
        emit_json(report)
        return
    where = f"{scope['from']} -> {scope['to']} ({scope['mode']}" + (f", {scope['ref_mode']})" if scope["mode"] == "ref"
                                                                    else ")")
    echo(f"diff {where}: {' '.join(wrapped)}")
    for title, key in (("Added", "added"), ("Modified", "modified"), ("Removed", "removed")):
        for entry in report[key]:
            echo(f"{title}: {entry['path']}")
            if include_content and "content" in entry:
                echo(entry["content"].rstrip("\n"))
            if include_content and "from_content" in entry:
                echo("--- from\n" + entry["from_content"].rstrip("\n") + "\n--- to\n" + entry["content"].rstrip("\n"))
    summary = report["summary"]
    echo(f"summary: added={summary['added']} modified={summary['modified']} removed={summary['removed']}")


def compare(left: dict[str, str], right: dict[str, str], limit: int | None,
            contents: dict[str, dict[str, bytes]] | None) -> dict[str, Any]:
    """Added / modified / removed files between two closures (path -> sha256)."""

    def text(side: str, path: str) -> str | None:
        if contents is None or path not in contents[side]:
            return None
        return contents[side][path].decode("utf-8", "replace")

    added = [{"path": p, "hash": right[p]} for p in sorted(set(right) - set(left))]
    removed = [{"path": p, "hash": left[p]} for p in sorted(set(left) - set(right))]
    modified = [{"path": p, "hash": right[p], "from_hash": left[p]} for p in sorted(set(left) & set(right))
                if left[p] != right[p]]
    if contents is not None:
        for entry in added + modified:
            if (content := text("to", entry["path"])) is not None:
                entry["content"] = content
        for entry in modified:
            if (content := text("from", entry["path"])) is not None:
                entry["from_content"] = content
        for entry in removed:
            if (content := text("from", entry["path"])) is not None:
                entry["content"] = content
    summary = {"added": len(added), "modified": len(modified), "removed": len(removed)}
    return {"added": added[:limit], "modified": modified[:limit], "removed": removed[:limit], "summary": summary}
