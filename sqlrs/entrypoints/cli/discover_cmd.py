"""`sqlrs discover [--aliases]`: suggest alias files for the workflows found below the current
directory. Advisory and read-only: it prints `sqlrs alias create ...` commands, never writes.

The aliases analyzer, as the upstream's:

1. a cheap prefilter by name and a look at the text: psql scripts (`.sql`), Liquibase changelogs
   (XML/YAML/JSON with `databaseChangeLog`, SQL starting `--liquibase formatted sql`), Alembic
   configs (`alembic.ini` with a `script_location`);
2. the include graph: a script another script includes (`\\i`, `\\ir`) is no entry point, nor is a
   changelog another changelog includes;
3. a kind and a score per remaining file: a script that writes (CREATE, INSERT, COPY, includes)
   is a prepare candidate, one that only reads (SELECT, WITH) a run:psql candidate, one with
   pgbench's markers (`\\set ... random`, `:scale`) a run:pgbench candidate;
4. what existing aliases already cover is suppressed.

The ref of a suggestion is the file's directory (`chinook/prepare.sql` -> `chinook`, written as
`chinook.prep.s9s.yaml` beside that directory), or its stem for a file in the current directory.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import click

from sqlrs.domain.scripts import RELATIVE_COMMANDS, parse_include
from sqlrs.entrypoints.cli import aliases
from sqlrs.entrypoints.cli.output import Ctx, echo, emit_json

SKIP_DIRS = {".git", ".sqlrs", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", "target",
             "build", "dist"}
MAX_BYTES = 64 * 1024  # what is read of a file to classify it (data dumps run to megabytes)
WRITES = re.compile(r"^\s*(create|alter|insert|copy|drop|grant|comment|do|update|delete|truncate)\b",
                    re.IGNORECASE | re.MULTILINE)
READS = re.compile(r"^\s*(select|with|explain|table|values)\b", re.IGNORECASE | re.MULTILINE)
PGBENCH = re.compile(r"^\s*\\set\s+\w+\s+random|:scale\b|^\s*\\sleep\b", re.IGNORECASE | re.MULTILINE)
CHANGELOG = re.compile(r"databaseChangeLog", re.IGNORECASE)
ENTRY_NAMES = {"prepare", "init", "schema", "setup", "main", "master", "changelog", "db.changelog-master"}


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _walk(start: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(start):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
        found += [Path(directory) / name for name in sorted(files)]
    return found


def _changelog_kind(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".sql":
        return text.lstrip().lower().startswith("--liquibase formatted sql")
    return suffix in (".xml", ".yaml", ".yml", ".json") and bool(CHANGELOG.search(text))


def _includes(path: Path, text: str, cwd: Path) -> set[Path]:
    """Files a psql script includes (what can be resolved without running it)."""
    targets: set[Path] = set()
    for line in text.split("\n"):
        if "\\i" not in line:
            continue
        parsed = parse_include(line)
        if parsed is None or not parsed[1] or parsed[1].startswith(":"):
            continue
        command, target = parsed
        base = path.parent if command in RELATIVE_COMMANDS else cwd
        targets.add(Path(os.path.normpath(base / target)))
    return targets


def _changelog_includes(path: Path, text: str) -> set[Path]:
    """Changelogs a changelog includes by a file attribute (relative to it or to the search path,
    which is unknown: both are taken)."""
    found: set[Path] = set()
    for match in re.finditer(r"(?:file|path)\s*[=:]\s*[\"']?([^\"'\s>,}]+)", text):
        target = match.group(1)
        found.add(Path(os.path.normpath(path.parent / target)))
        found.add(Path(os.path.normpath(Path.cwd() / target)))
    return found


def _covered(cwd: Path, root: Path) -> set[Path]:
    """Files existing aliases name (they need no suggestion)."""
    covered: set[Path] = set()
    for path, cls in aliases.scan(root, "recursive", (aliases.PREPARE, aliases.RUN)):
        try:
            alias = aliases.load(path, cls)
        except Exception:
            continue
        covered |= {Path(os.path.normpath(p)) for _, p, _ in aliases.referenced_paths(alias)}
    return covered


def analyze(cwd: Path, root: Path) -> dict[str, Any]:
    files = _walk(cwd)
    texts: dict[Path, str] = {}
    kinds: dict[Path, str] = {}
    for path in files:
        name = path.name.lower()
        if name == "alembic.ini":
            text = _head(path)
            if re.search(r"^\s*script_location\s*=", text, re.MULTILINE):
                kinds[path] = "alembic"
        elif path.suffix.lower() in (".sql", ".xml", ".yaml", ".yml", ".json") and aliases.class_of(name) is None:
            text = _head(path)
            if _changelog_kind(path, text):
                kinds[path] = "lb"
                texts[path] = text
            elif path.suffix.lower() == ".sql":
                kinds[path] = "psql"
                texts[path] = text
    included: set[Path] = set()  # normalized paths
    for path, kind in kinds.items():
        if kind == "psql":
            included |= _includes(path, texts[path], cwd)
        elif kind == "lb":
            included |= _changelog_includes(path, texts[path])
    covered = _covered(cwd, root)
    findings: list[dict[str, Any]] = []
    suppressed = 0
    for path, kind in kinds.items():
        if Path(os.path.normpath(path)) in included:
            continue
        if Path(os.path.normpath(path)) in covered:
            suppressed += 1
            continue
        findings.append(_finding(path, kind, texts.get(path, ""), cwd))
    _unique_refs(findings)
    findings.sort(key=lambda f: (-f["score"], f["alias_path"]))
    entries = sum(1 for path in kinds if Path(os.path.normpath(path)) not in included)
    return {"scanned": len(files), "prefiltered": len(kinds), "validated": entries, "suppressed": suppressed,
            "findings": findings}


def _finding(path: Path, kind: str, text: str, cwd: Path) -> dict[str, Any]:
    relative = Path(os.path.relpath(path, cwd))
    stem = relative.stem.lower()
    score, reasons = 50, []
    cls, tool = aliases.PREPARE, kind
    if kind == "psql":
        if PGBENCH.search(text) or "bench" in str(relative).lower():
            cls, tool = aliases.RUN, "pgbench"
            reasons.append("pgbench workload markers")
        elif READS.search(text) and not WRITES.search(text) and "\\i" not in text:
            cls = aliases.RUN
            reasons.append("query fragment (reads only)")
        else:
            reasons.append("writes schema or data" if WRITES.search(text) else "includes other scripts")
            if "\\i" in text:
                score += 10
                reasons.append("includes other scripts")
    elif kind == "lb":
        reasons.append("Liquibase changelog, included by no other")
    else:
        reasons.append("Alembic configuration")
        score += 10
    if stem in ENTRY_NAMES:
        score += 20
        reasons.append(f"entry-point name ({relative.name})")
    ref = relative.parent.as_posix() if relative.parent != Path(".") else relative.stem
    if kind == "lb":
        args = ["update", "--changelog-file", relative.as_posix()]
    elif kind == "alembic":
        args = ["-c", relative.as_posix()]
    else:
        args = ["-f", relative.as_posix()]
    return {"type": cls, "kind": tool, "ref": ref, "file": relative.as_posix(),
            "alias_path": ref + aliases.SUFFIXES[cls], "reason": "; ".join(dict.fromkeys(reasons)),
            "score": min(score, 100), "valid": True, "args": args}


def _unique_refs(findings: list[dict[str, Any]]) -> None:
    """Two suggestions for one alias file: name both after their file (`dir/stem`)."""
    taken: dict[str, int] = {}
    for finding in findings:
        taken[finding["alias_path"]] = taken.get(finding["alias_path"], 0) + 1
    for finding in findings:
        if taken[finding["alias_path"]] > 1:
            stem = Path(finding["file"]).with_suffix("").as_posix()
            finding["ref"] = stem
            finding["alias_path"] = stem + aliases.SUFFIXES[finding["type"]]
    for finding in findings:
        args = finding.pop("args")
        finding["create_command"] = shlex.join(["sqlrs", "alias", "create", finding["ref"],
                                                f"{finding['type']}:{finding['kind']}", "--", *args])


@click.command("discover")
@click.option("--aliases", "want_aliases", is_flag=True, help="Suggest alias files (the only analyzer so far; "
              "also what bare `discover` runs).")
@click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def discover(ctx: Ctx, want_aliases: bool, output: str) -> None:
    """Suggest alias files for the scripts, changelogs and Alembic projects below the current
    directory, as copy-paste `sqlrs alias create ...` commands. Reads only."""
    from sqlrs.engine_client.workspace import find_root

    cwd = Path.cwd()
    ctx.note("discover: scanning " + str(cwd))
    report = analyze(cwd, Path(find_root(str(cwd))))
    if output == "json":
        emit_json(report)
        return
    for number, finding in enumerate(report["findings"], 1):
        echo(f"{number}. {finding['type']} {finding['kind']}  ref {finding['ref']}  (score {finding['score']})")
        echo(f"   file:  {finding['file']}")
        echo(f"   alias: {finding['alias_path']}")
        echo(f"   why:   {finding['reason']}")
        echo(f"   {finding['create_command']}")
    echo(f"scanned={report['scanned']} candidates={report['prefiltered']} suppressed={report['suppressed']} "
         f"findings={len(report['findings'])}")
