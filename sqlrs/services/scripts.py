"""Writing a step's scripts where the tools can read them, and reading psql's errors back."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import attrs

from sqlrs.domain.pgerrors import context_after
from sqlrs.domain.steps import Step

PSQL_LOCATION_RE = re.compile(r"^psql:(?P<file>.+?):(?P<line>\d+): (?P<message>.*)$")


@attrs.frozen
class Materialized:
    entry: str  # the step's main script as the tools see it
    originals: dict[str, str]  # path as the tools see it -> path as the user gave it

    def humanize(self, text: str) -> str:
        """Put the user's paths back into tool output."""
        for visible, original in sorted(self.originals.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(visible, original)
        return text


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def materialize(step: Step, directory: Path, visible: Callable[[Path], str]) -> Materialized:
    """Write every file of a `-f` step into `directory`; include lines point at the copies.

    Each file keeps its own line numbers, so psql's `file:line` in errors stays meaningful.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    originals: dict[str, str] = {}
    paths = [directory / f"f{index}.sql" for index in range(len(step.files))]
    for index, script in enumerate(step.files):
        lines = script.lines()
        for include in script.includes:
            lines[include.line] = "\\i " + _quote(visible(paths[include.file]))
        paths[index].write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        os.chmod(paths[index], 0o644)
        originals[visible(paths[index])] = script.path
    return Materialized(entry=visible(paths[0]), originals=originals)


@attrs.frozen
class PsqlError:
    file: str | None
    line: int | None
    message: str


def first_error(output: str) -> PsqlError | None:
    """The first ERROR/FATAL psql reported, with its file and line when psql gave them.

    The line is psql's own: for a statement spanning several lines psql names the line the
    statement ends on (where it read the `;`), and the `LINE n:` context that follows counts
    lines within the statement. Both are kept as psql printed them (the message carries the
    context lines), so what users see matches what psql shows them."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        match = PSQL_LOCATION_RE.match(line)
        if match and ("ERROR" in match.group("message") or "FATAL" in match.group("message")
                      or "error" in match.group("message")):
            message = match.group("message")
            return PsqlError(match.group("file"), int(match.group("line")),
                             "\n".join([message, *context_after(lines, index + 1)]))
        if line.startswith(("ERROR:", "FATAL:", "psql: error:")):
            return PsqlError(None, None, "\n".join([line, *context_after(lines, index + 1)]))
    return None
