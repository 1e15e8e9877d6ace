"""Writing a step's scripts where the tools can read them, and reading psql's errors back."""

from __future__ import annotations

import os
import re
import secrets
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


def psql_quote(path: str) -> str:
    """A path as a quoted argument of a psql meta-command (`\\i`)."""
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
            lines[include.line] = "\\i " + psql_quote(visible(paths[include.file]))
        paths[index].write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        os.chmod(paths[index], 0o644)
        originals[visible(paths[index])] = script.path
    return Materialized(entry=visible(paths[0]), originals=originals)


# bytes one argument may hold, with room to spare: Linux refuses an argument over 128 KiB
# (MAX_ARG_STRLEN) with E2BIG, whatever the total size of the command line
ARGUMENT_MAX = 100_000


def command_args(sql: str, directory: Path, visible: Callable[[Path], str]) -> tuple[list[str], Callable[[str], str]]:
    """psql's arguments for a `-c` step, and what puts its output back as `-c` would print it.

    `-c SQL` sends SQL to the server as one query string: no psql variables or backslash
    commands in it, one implicit transaction. SQL too long for one argument (a library `sql=`
    step) goes in a script that sends it exactly so: the text is one dollar-quoted literal,
    which psql neither splits nor interpolates, run by `\\gexec` as one query string.
    """
    if len(sql.encode("utf-8", "surrogateescape")) <= ARGUMENT_MAX:
        return ["-c", sql], lambda text: text
    tag = "sqlrs"
    while f"${tag}$" in sql:
        tag = f"sqlrs_{secrets.token_hex(4)}"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    script = directory / "command.sql"
    script.write_bytes(f"SELECT ${tag}${sql}${tag}$ \\gexec\n".encode("utf-8", "surrogateescape"))
    os.chmod(script, 0o644)
    seen = visible(script)
    location = re.compile(rf"^psql:{re.escape(seen)}:\d+: ", re.MULTILINE)  # -c output names no file
    return ["-f", seen], lambda text: location.sub("", text)


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
