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
and the *skeleton* (everything but changesets: properties, includes, changelog preconditions) of
every changelog parsed up to its own; appending a changeset therefore changes no earlier digest.

Only the standard library and PyYAML (imported when a YAML changelog is read).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import xml.parsers.expat
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from sqlrs.domain.errors import UsageError

CHANGELOG_SUFFIXES = (".xml", ".yaml", ".yml", ".json", ".sql")
FORMATTED_SQL_RE = re.compile(r"^\s*--\s*liquibase\s+formatted\s+sql", re.IGNORECASE)
# Liquibase's own pattern: the author runs to the first colon, quotes allow spaces
CHANGESET_SQL_RE = re.compile(r"^\s*--\s*changeset\s+(\"[^\"]+\"|[^:\s]+):(\"[^\"]+\"|\S+)", re.IGNORECASE)
SQL_PROPERTY_RE = re.compile(r"^\s*--\s*property\s", re.IGNORECASE)
SQL_INCLUDE_RE = re.compile(r"^\s*--\s*include(all)?\s", re.IGNORECASE)
# changes that read a file, and the attribute naming it (XML attribute / YAML key)
FILE_ATTRIBUTES = {"loadData": "file", "loadUpdateData": "file", "sqlFile": "path", "createProcedure": "path",
                   "createView": "path"}


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


@attrs.frozen
class _Entry:
    """A changeset or an include directive of one changelog, in document order."""

    kind: str  # "changeset" | "include" | "includeAll"
    path: str = ""  # include target, resolved to a logical path
    id: str = ""
    author: str = ""
    text: str = ""  # changesets: canonical text (what the digest hashes)
    resources: tuple[str, ...] = ()  # changesets: logical paths of the files it reads
    logical: str | None = None  # changeset-level logicalFilePath
    span: tuple[int, int] = (0, 0)  # changesets: where it is in the file (format-specific units)
    missing_ok: bool = False  # includeAll errorIfMissingOrEmpty=false


@attrs.frozen
class _Parsed:
    entries: tuple[_Entry, ...]
    skeleton: str  # the file without its changesets
    logical: str | None  # changelog-level logicalFilePath


def _norm(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    normalized = posixpath.normpath(path) if path else path
    return normalized.lstrip("/") if normalized != "." else ""


def resolve(including: str, target: str, relative: bool) -> str:
    """The logical path of `target` named in the changelog `including`."""
    if relative:
        return _norm(posixpath.join(posixpath.dirname(including), target))
    return _norm(target)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _local(name: str) -> str:
    return name.rsplit(" ", 1)[-1].rsplit(":", 1)[-1]


# -- XML ---------------------------------------------------------------------------------------

def _tag_end(data: bytes, start: int) -> int:
    """Index just past the tag that starts at `start` ('<'), honouring quoted attribute values."""
    quote = 0
    for index in range(start + 1, len(data)):
        byte = data[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in (0x22, 0x27):
            quote = byte
        elif byte == 0x3E:
            return index + 1
    return len(data)


def _parse_xml(path: str, content: str) -> _Parsed:
    data = content.encode("utf-8")
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    entries: list[_Entry] = []
    logical: list[str | None] = [None]
    depth = 0
    current: dict[str, Any] = {}
    # the skeleton, free of whitespace, comments and include spelling: the root's attributes, then
    # every top-level element but changesets (includes as the logical path they resolve to)
    skeleton: list[Any] = []
    other: dict[str, Any] = {}

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth, current, other
        local = _local(name)
        at = parser.CurrentByteIndex
        if depth == 0:
            logical[0] = attributes.get("logicalFilePath")
            skeleton.append(sorted(attributes.items()))
        if depth == 1 and local != "changeSet":
            other = {"start": at, "local": local, "attributes": attributes}
        if depth == 1 and local == "changeSet":
            current = {"start": at, "id": attributes.get("id", ""), "author": attributes.get("author", ""),
                       "logical": attributes.get("logicalFilePath"), "resources": []}
        elif depth == 1 and local == "include":
            entries.append(_Entry("include", resolve(path, attributes.get("file", ""),
                                                     _truthy(attributes.get("relativeToChangelogFile")))))
        elif depth == 1 and local == "includeAll":
            entries.append(_Entry("includeAll", resolve(path, attributes.get("path", ""),
                                                        _truthy(attributes.get("relativeToChangelogFile"))),
                                  missing_ok=str(attributes.get("errorIfMissingOrEmpty", "")).lower() == "false"))
        elif depth >= 2 and current and local in FILE_ATTRIBUTES and FILE_ATTRIBUTES[local] in attributes:
            current["resources"].append(resolve(path, attributes[FILE_ATTRIBUTES[local]],
                                                _truthy(attributes.get("relativeToChangelogFile"))))
        depth += 1

    def end(name: str) -> None:
        nonlocal depth, current, other
        depth -= 1
        if depth == 1 and _local(name) != "changeSet" and other:
            if other["local"] in ("include", "includeAll"):
                skeleton.append([other["local"], entries[-1].path, sorted(
                    (k, v) for k, v in other["attributes"].items()
                    if k not in ("file", "path", "relativeToChangelogFile"))])
            else:
                text = data[other["start"]:_tag_end(data, parser.CurrentByteIndex)].decode("utf-8")
                skeleton.append(re.sub(r"\s+", " ", re.sub(r">\s+<", "><", text)))
            other = {}
        if depth == 1 and _local(name) == "changeSet" and current:
            stop = _tag_end(data, parser.CurrentByteIndex)
            span = (current["start"], stop)
            entries.append(_Entry("changeset", id=current["id"], author=current["author"],
                                  text=data[span[0]:span[1]].decode("utf-8"),
                                  resources=tuple(current["resources"]), logical=current["logical"], span=span))
            current = {}

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise UsageError(f"{path}: not well-formed XML ({exc})") from None
    return _Parsed(tuple(entries), _canonical(skeleton), logical[0])


def _cut(data: bytes, spans: Sequence[tuple[int, int]]) -> bytes:
    out, at = [], 0
    for begin, stop in sorted(spans):
        out.append(data[at:begin])
        at = stop
    out.append(data[at:])
    return b"".join(out)


# -- YAML / JSON -------------------------------------------------------------------------------

def _load_document(path: str, content: str) -> Any:
    if path.lower().endswith(".json"):
        try:
            return json.loads(content)
        except ValueError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
    import yaml  # only YAML changelogs need it

    try:
        return yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _document_items(path: str, document: Any) -> list[Any]:
    if document is None:
        return []
    items = document.get("databaseChangeLog") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise UsageError(f"{path}: a changelog is a mapping with a databaseChangeLog list")
    return items


def _walk_resources(path: str, value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in FILE_ATTRIBUTES and isinstance(inner, dict) and FILE_ATTRIBUTES[key] in inner:
                yield resolve(path, str(inner[FILE_ATTRIBUTES[key]]), _truthy(inner.get("relativeToChangelogFile")))
            yield from _walk_resources(path, inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk_resources(path, inner)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _parse_structured(path: str, content: str) -> _Parsed:
    document = _load_document(path, content)
    items = _document_items(path, document)
    entries: list[_Entry] = []
    skeleton: list[Any] = []
    logical = None
    for position, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            skeleton.append(item)
            continue
        (key, body), = item.items()
        body = body if isinstance(body, dict) else {}
        if key == "changeSet":
            entries.append(_Entry("changeset", id=str(body.get("id", "")), author=str(body.get("author", "")),
                                  text=_canonical(body), resources=tuple(_walk_resources(path, body)),
                                  logical=body.get("logicalFilePath"), span=(position, position + 1)))
            continue
        if key == "include":
            entries.append(_Entry("include", resolve(path, str(body.get("file", "")),
                                                     _truthy(body.get("relativeToChangelogFile")))))
        elif key == "includeAll":
            entries.append(_Entry("includeAll", resolve(path, str(body.get("path", "")),
                                                        _truthy(body.get("relativeToChangelogFile"))),
                                  missing_ok=str(body.get("errorIfMissingOrEmpty", "")).lower() == "false"))
        elif key == "logicalFilePath":
            logical = str(body)
        if key in ("include", "includeAll"):  # spelled any way, the same file is the same include
            rest = {k: v for k, v in body.items() if k not in ("file", "path", "relativeToChangelogFile")}
            skeleton.append([key, entries[-1].path, rest])
            continue
        skeleton.append(item)
    if isinstance(document, dict) and isinstance(document.get("logicalFilePath"), str):
        logical = document["logicalFilePath"]
    return _Parsed(tuple(entries), _canonical(skeleton), logical)


def _only_structured(path: str, content: str, keep: int | None) -> str:
    document = _load_document(path, content)
    items = _document_items(path, document)
    kept = [item for position, item in enumerate(items)
            if not (isinstance(item, dict) and len(item) == 1 and "changeSet" in item) or position == keep]
    document = dict(document or {})
    document["databaseChangeLog"] = kept
    if path.lower().endswith(".json"):
        return json.dumps(document, indent=2, ensure_ascii=False)
    import yaml

    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


# -- SQL ---------------------------------------------------------------------------------------

def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == '"' == value[-1] else value


def _parse_sql(path: str, content: str) -> _Parsed:
    lines = content.splitlines(keepends=True)
    if not lines or not FORMATTED_SQL_RE.match(lines[0]):
        # a plain SQL file (under includeAll) is one changeset, as Liquibase's SqlChangeLogParser makes it
        return _Parsed((_Entry("changeset", id="raw", author="includeAll", text=content.rstrip(),
                               span=(0, len(lines))),), "", None)
    entries: list[_Entry] = []
    starts = [number for number, line in enumerate(lines) if CHANGESET_SQL_RE.match(line)]
    for number, line in enumerate(lines[: starts[0] if starts else len(lines)]):
        if SQL_INCLUDE_RE.match(line):
            raise UsageError(f"{path}:{number + 1}: sqlrs does not follow includes in formatted SQL changelogs",
                             hint="include the file from an XML or YAML changelog instead")
    for position, begin in enumerate(starts):
        stop = starts[position + 1] if position + 1 < len(starts) else len(lines)
        match = CHANGESET_SQL_RE.match(lines[begin])
        assert match is not None
        # trailing blank lines belong to no changeset: appending one after the last must not change it
        entries.append(_Entry("changeset", id=_unquote(match.group(2)), author=_unquote(match.group(1)),
                              text="".join(lines[begin:stop]).rstrip(), span=(begin, stop)))
    head = "".join(lines[: starts[0]]) if starts else content
    return _Parsed(tuple(entries), head, None)


def _only_sql(content: str, keep: tuple[int, int] | None) -> str:
    lines = content.splitlines(keepends=True)
    if not lines or not FORMATTED_SQL_RE.match(lines[0]):
        # raw SQL: kept whole, or replaced by a formatted changelog without changesets
        return content if keep is not None else "--liquibase formatted sql\n"
    starts = [number for number, line in enumerate(lines) if CHANGESET_SQL_RE.match(line)]
    head = lines[: starts[0]] if starts else lines
    body = lines[keep[0]:keep[1]] if keep is not None else []
    return "".join(head + body)


# -- the bundle --------------------------------------------------------------------------------

def parse_file(path: str, content: str) -> _Parsed:
    lower = path.lower()
    if lower.endswith(".xml"):
        return _parse_xml(path, content)
    if lower.endswith((".yaml", ".yml", ".json")):
        return _parse_structured(path, content)
    if lower.endswith(".sql"):
        return _parse_sql(path, content)
    raise UsageError(f"{path}: not a changelog Liquibase reads", hint="changelogs end in " +
                     ", ".join(CHANGELOG_SUFFIXES))


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
    skeletons: list[str] = []
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
        if path in active:
            raise UsageError("include cycle: " + " -> ".join((*active, path)))
        active.append(path)
        if path not in changelogs:
            changelogs.append(path)
        parsed = parse_file(path, load(path, named_by))
        skeletons.append(_field_digest(path, parsed.skeleton))
        ordinal = 0
        for entry in parsed.entries:
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
                digest = _field_digest("liquibase-changeset", 1, filename, entry.id, entry.author, entry.text,
                                       resources, skeletons)
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

