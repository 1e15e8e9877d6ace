"""psql script structure that both the CLI and the engine need: include directives.

Kept free of third-party imports so the thin CLI can use it on its hot path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

# psql's include meta-commands; `\i` and `\include` resolve against the cwd, the `_relative`
# forms against the including file's directory (psql's rules).
INCLUDE_RE = re.compile(r"^\s*\\(include_relative|include|ir|i)(?:\s+(.*?))?\s*;?\s*$")
RELATIVE_COMMANDS = frozenset({"ir", "include_relative"})


def parse_include(line: str) -> tuple[str, str] | None:
    """Return (command, target) when `line` is a whole-line include directive, else None.

    A target in single quotes is unquoted the way psql does for simple cases ('' is a quote).
    """
    match = INCLUDE_RE.match(line)
    if not match:
        return None
    command, target = match.group(1), (match.group(2) or "").strip()
    if len(target) >= 2 and target[0] == "'" and target[-1] == "'":
        target = target[1:-1].replace("''", "'")
    return command, target


CONNECT_RE = re.compile(r"^\s*\\(?:c|connect)(?:\s+(.*?))?\s*$")


def connect_target_outside(line: str) -> str | None:
    """The offending argument when `line` is a `\\c`/`\\connect` that leaves the instance.

    Steps may switch database and user inside their instance (`\\c chinook`, `\\c db user`), never
    to another host or port, and not by a conninfo string: what a state contains must come from
    its scripts and the instance alone.
    """
    match = CONNECT_RE.match(line)
    if not match or not match.group(1):
        return None
    args = match.group(1).split()
    for arg in args:
        if "=" in arg or arg.startswith(("postgres://", "postgresql://")):
            return arg
    if len(args) > 2 and args[2] != "-":
        return args[2]
    if len(args) > 3 and args[3] != "-":
        return args[3]
    return None


def script_lines(content: str) -> list[str]:
    """A script's lines; a final newline ends the last line rather than starting another."""
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def normalized_content(files: Sequence[tuple[str, Sequence[tuple[int, int]]]]) -> str:
    """files[0] with every include line replaced by the included file's lines, depth-first.

    Each file is (content, [(line index, included file index), ...]). This is what a `-f` step's
    cache key hashes: how an include is spelled, and where the file lies, do not matter.
    """

    def expand(index: int) -> Iterator[str]:
        content, includes = files[index]
        if not includes:
            # the whole file as one piece: data files run to megabytes, and splitting them into
            # lines only to join them again is most of a cache hit's time in the CLI
            if content:
                yield content[:-1] if content.endswith("\n") else content
            return
        targets = dict(includes)
        for number, line in enumerate(script_lines(content)):
            if number in targets:
                yield from expand(targets[number])
            else:
                yield line

    return "\n".join(expand(0))


def content_digest(text: str) -> str:
    """sha256 of a step's normalized content, as sent by the CLI and checked by the engine."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def step_inputs(step: dict[str, object]) -> list[tuple[str, str]]:
    """What a step's state depends on, as (input, sha256) pairs, from the step as the API carries it:
    a `-f` step's files by the path they were read from, a `-c` step's SQL, a host step's keyed
    facts (a revision file's sha256, a declared input's, a changeset's digest, ...). Empty for a
    step sent as its digest only. Recorded with the job that builds a state, compared by
    `sqlrs cache explain`, written by `--provenance-path`."""
    kind, files = step.get("kind"), step.get("files")
    if kind == "file" and isinstance(files, list):
        return [(str(f["path"]), hashlib.sha256(str(f["content"]).encode("utf-8", "surrogatepass")).hexdigest())
                for f in files if isinstance(f, dict)]
    if kind == "command" and isinstance(step.get("sql"), str):
        return [("-c", hashlib.sha256(str(step["sql"]).encode("utf-8", "surrogatepass")).hexdigest())]
    keyed = step.get("keyed")
    if isinstance(keyed, list | tuple):
        return [(str(name), str(value)) for name, value in keyed]
    return []
