"""Liquibase changelogs read without a JVM: changesets in Liquibase's order, their digests, and the
changelog tree reduced to a single changeset.

The CLI reads the changelogs (XML, YAML, JSON, formatted SQL, raw SQL under `includeAll`), follows
`include` / `includeAll` and the files changesets load (`loadData` CSVs, `sqlFile`), and sends them
as one *bundle* of files keyed by their logical path: the path relative to the search path, as
Liquibase records it in DATABASECHANGELOG.FILENAME. Every changeset is one step, one cached state.

How one changeset is applied: the engine lays the bundle out again with every changeset but that
one removed (`only_changeset`) and runs a plain `liquibase update` on the state of the previous
changeset. Liquibase then decides about that changeset exactly as a plain update of the whole
changelog would at that point (contexts, labels, dbms, preconditions, runOnChange), and
`runAlways` changesets of earlier steps do not run again, which `update-count --count=1` would do.

A changeset's digest covers its own text, the logical path Liquibase records, the files it loads,
and what precedes it in Liquibase's order: the *skeleton* (everything but changesets and includes:
properties, changelog preconditions, the root's attributes) of every changelog entered so far, and
the include directives met so far. Appending a changeset, or an include (how JHipster and
Liquibase's docs grow a project), therefore changes no earlier digest.

The file formats are parsed in liquibase_parse.py (the standard library and PyYAML, imported when a
YAML changelog is read): a parser of third-party files, neither domain model nor adapter, shared by
the engine client and the engine's Liquibase step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from sqlrs.changelogs.liquibase_parse import (
    CHANGELOG_SUFFIXES,
    _canonical,
    _cut,
    _norm,
    _only_sql,
    _only_structured,
    parse_file,
    resolve,
)
from sqlrs.domain.errors import UsageError

__all__ = ["CHANGELOG_SUFFIXES", "ChangelogFile", "Changeset", "Lister", "Project", "Reader", "bundle_reader",
           "only_changeset", "parse_file", "read_project", "resolve"]


@attrs.frozen
class ChangelogFile:
    path: str  # logical path: relative to the search path, "/"-separated
    content: str


@attrs.frozen
class Changeset:
    """One changeset of the bundle, in Liquibase's order."""

    file: str  # logical path of its changelog
    ordinal: int  # its position among the changesets of that file
    id: str
    author: str
    filename: str  # what Liquibase records in DATABASECHANGELOG.FILENAME
    digest: str

    @property
    def source(self) -> str:
        return f"{self.file}::{self.id}::{self.author}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _field_digest(*fields: Any) -> str:
    """sha256 over length-prefixed fields (same idea as keys.digest, without importing it)."""
    hasher = hashlib.sha256()
    for field in fields:
        raw = _canonical(field).encode("utf-8", "surrogatepass")
        hasher.update(len(raw).to_bytes(8, "big") + raw)
    return hasher.hexdigest()


Reader = Callable[[str], "str | None"]
Lister = Callable[[str], "list[str] | None"]


@attrs.frozen
class Project:
    root: str  # logical path of the root changelog
    files: tuple[ChangelogFile, ...]  # every changelog and every file a changeset reads
    changelogs: tuple[str, ...]  # which of them are changelogs, in the order Liquibase parses them
    changesets: tuple[Changeset, ...]  # in Liquibase's order


def read_project(root: str, read: Reader, listdir: Lister) -> Project:
    """Follow the changelog tree from `root` (a logical path), in Liquibase's order.

    `read(path)` returns a file's text or None when it does not exist; `listdir(dir)` returns the
    logical paths of every file below `dir` (recursively) or None when there is no such directory.
    Only the CLI needs `listdir` (includeAll); the engine checks a bundle with `bundle_reader`.
    """
    files: dict[str, str] = {}
    changesets: list[Changeset] = []
    # what precedes the next changeset, chained: each changelog entered (its skeleton) and each
    # include met, in Liquibase's order; nothing that comes after a changeset enters its digest
    preceding = _field_digest("liquibase-preceding", 1)
    active: list[str] = []
    changelogs: list[str] = []

    def load(path: str, named_by: str | None) -> str:
        if path not in files:
            content = read(path)
            if content is None:
                where = f" (named in {named_by})" if named_by else ""
                raise UsageError(f"{path}: no such file{where}", hint="paths are relative to the search path "
                                 "unless relativeToChangelogFile=\"true\"")
            files[path] = content
        return files[path]

    def visit(path: str, named_by: str | None) -> None:
        nonlocal preceding
        if path in active:
            raise UsageError("include cycle: " + " -> ".join((*active, path)))
        active.append(path)
        if path not in changelogs:
            changelogs.append(path)
        parsed = parse_file(path, load(path, named_by))
        preceding = _field_digest(preceding, "changelog", path, parsed.skeleton)
        ordinal = 0
        for entry in parsed.entries:
            if entry.kind != "changeset":
                preceding = _field_digest(preceding, entry.kind, entry.path, entry.options)
            if entry.kind == "include":
                visit(entry.path, path)
            elif entry.kind == "includeAll":
                listed = listdir(entry.path)
                found = sorted(p for p in (listed or []) if p.lower().endswith(CHANGELOG_SUFFIXES))
                if not found and not entry.missing_ok:
                    raise UsageError(f"{path}: includeAll {entry.path}/ finds no changelog",
                                     hint='errorIfMissingOrEmpty="false" allows that')
                for included in found:
                    visit(included, path)
            else:
                resources = [(r, _sha(load(r, path))) for r in entry.resources]
                filename = entry.logical or parsed.logical or path
                digest = _field_digest("liquibase-changeset", 2, filename, entry.id, entry.author, entry.text,
                                       resources, preceding)
                changesets.append(Changeset(path, ordinal, entry.id, entry.author, filename, digest))
                ordinal += 1
        active.pop()

    visit(_norm(root), None)
    seen: dict[tuple[str, str, str], Changeset] = {}
    for changeset in changesets:
        identity = (changeset.filename, changeset.id, changeset.author)
        if identity in seen:
            raise UsageError(f"changeset {changeset.id} by {changeset.author} appears twice in {changeset.filename}",
                             hint="Liquibase refuses duplicate changeset identifiers")
        seen[identity] = changeset
    return Project(_norm(root), tuple(ChangelogFile(p, c) for p, c in files.items()),
                   tuple(changelogs), tuple(changesets))


def bundle_reader(files: Sequence[ChangelogFile]) -> tuple[Reader, Lister]:
    """read/listdir over a bundle, so the engine can check what the CLI sent."""
    by_path = {f.path: f.content for f in files}

    def listdir(directory: str) -> list[str] | None:
        prefix = directory.rstrip("/") + "/" if directory else ""
        return [p for p in by_path if p.startswith(prefix)]

    return by_path.get, listdir


def only_changeset(project: Project, keep: Changeset | None) -> dict[str, str]:
    """The bundle's files with every changeset removed but `keep` (None: all removed)."""
    out: dict[str, str] = {}
    changelogs = set(project.changelogs)
    for changelog in project.files:
        path, content = changelog.path, changelog.content
        if path not in changelogs:
            out[path] = content
            continue
        parsed = parse_file(path, content)
        spans = [e.span for e in parsed.entries if e.kind == "changeset"]
        kept = spans[keep.ordinal] if keep is not None and keep.file == path else None
        lower = path.lower()
        if lower.endswith(".xml"):
            data = content.encode("utf-8")
            out[path] = _cut(data, [s for s in spans if s != kept]).decode("utf-8")
        elif lower.endswith(".sql"):
            out[path] = _only_sql(content, kept)
        else:
            out[path] = _only_structured(path, content, kept[0] if kept else None)
    return out
