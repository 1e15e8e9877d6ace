"""Liquibase changelog files parsed without a JVM: XML (expat), YAML/JSON (PyYAML, imported when
a YAML changelog is read), formatted and raw SQL. Each file becomes its changesets and include
directives in document order, with where each changeset sits, so that the project reader
(sqlrs.changelogs.liquibase) can key changesets and cut a file down to one of them.
"""

from __future__ import annotations

import json
import posixpath
import re
import xml.parsers.expat
from collections.abc import Iterator, Sequence
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
    options: str = ""  # includes: their other attributes (contexts, labels, ...), canonical


@attrs.frozen
class _Parsed:
    entries: tuple[_Entry, ...]
    skeleton: str  # the file without its changesets and includes (those are entries)
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


def _include(path: str, kind: str, attributes: dict[str, Any]) -> _Entry:
    """An include or includeAll directive of the changelog `path`; spelled any way (relative or not,
    `./`, `..`), the same file is the same include."""
    target = resolve(path, str(attributes.get("file" if kind == "include" else "path", "")),
                     _truthy(attributes.get("relativeToChangelogFile")))
    options = {k: v for k, v in attributes.items() if k not in ("file", "path", "relativeToChangelogFile")}
    return _Entry(kind, target, missing_ok=str(options.get("errorIfMissingOrEmpty", "")).lower() == "false",
                  options=_canonical(options))


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
    # the skeleton, free of whitespace and comments: the root's attributes, then every top-level
    # element but changesets and includes
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
        elif depth == 1 and local in ("include", "includeAll"):
            entries.append(_include(path, local, attributes))
        elif depth >= 2 and current and local in FILE_ATTRIBUTES and FILE_ATTRIBUTES[local] in attributes:
            current["resources"].append(resolve(path, attributes[FILE_ATTRIBUTES[local]],
                                                _truthy(attributes.get("relativeToChangelogFile"))))
        depth += 1

    def end(name: str) -> None:
        nonlocal depth, current, other
        depth -= 1
        if depth == 1 and _local(name) != "changeSet" and other:
            if other["local"] not in ("include", "includeAll"):
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
        if key in ("include", "includeAll"):
            entries.append(_include(path, key, body))
            continue
        if key == "logicalFilePath":
            logical = str(body)
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
