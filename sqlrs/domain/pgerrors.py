"""PostgreSQL errors shown the way psql shows them, whichever tool met them.

A failing step is reported alike for every step kind: a one-line headline (`ERROR:  column "x"
does not exist`) and, under it, what psql prints under an error: `LINE n:` with a caret under
the position, `DETAIL:`, `HINT:`, `QUERY:`, `CONTEXT:`; host steps add the failing statement
(`STATEMENT:`), which psql steps have in their file. psql steps take them from psql's output
(sqlrs.services.instances.scripts); host steps from the fields of the driver's exception, which a runner
in the user's Python reports (sqlrs.services.states.steps.host), or, for any command, from its output
(`scan_output`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

# what psql (libpq) prints under an error, SQLAlchemy's statement lines, a statement we add
CONTEXT_PREFIXES = ("LINE ", " ", "DETAIL:", "HINT:", "CONTEXT:", "QUERY:", "WHERE:", "STATEMENT:", "[SQL:",
                    "[parameters:")
MAX_CONTEXT_LINES = 8
MAX_STATEMENT_LINES = 20
MAX_STATEMENT_CHARS = 2000
# libpq's reportErrorPosition: a line longer than this is cut to show the position
DISPLAY_SIZE = 60
MIN_RIGHT_CUT = 10

_HEADLINE_RE = re.compile(r"^(?:psql:.+?:\d+: )?(?P<headline>(?:ERROR|FATAL|PANIC):  ?.*)$")
_CONTEXT_START_RE = re.compile(r"^(?:LINE \d+: |DETAIL:|HINT:|CONTEXT:|QUERY:)")


@attrs.frozen
class ErrorReport:
    """What a failed step reports: the headline, the lines under it, and where in the step's
    own file it failed (a host step's traceback through that file), when known."""

    headline: str
    context: tuple[str, ...] = ()
    line: int | None = None

    def details(self) -> dict[str, Any]:
        """The report's part of a StepFailed's details (`error`, `context`, `line`)."""
        return {"error": self.headline, "context": list(self.context), "line": self.line}


@attrs.frozen
class ServerError:
    """The fields of a PostgreSQL error message (protocol ErrorResponse) a driver exposes."""

    message: str
    severity: str = "ERROR"
    sqlstate: str | None = None
    detail: str | None = None
    hint: str | None = None
    position: int | None = None  # 1-based, in characters of `statement`
    internal_query: str | None = None
    internal_position: int | None = None
    context: str | None = None
    statement: str | None = None  # what the client sent, when it is known

    @property
    def headline(self) -> str:
        return f"{self.severity}:  {self.message}"

    def lines(self) -> list[str]:
        """The lines libpq prints under the headline (default verbosity), then the statement."""
        out: list[str] = []
        if self.statement and self.position:
            out += error_position(self.statement, self.position)
        elif self.internal_query and self.internal_position:  # an error inside a function's query
            out += error_position(self.internal_query, self.internal_position)
        out += _field("DETAIL", self.detail) + _field("HINT", self.hint) + _field("QUERY", self.internal_query)
        out += _field("CONTEXT", self.context)
        return out + statement_lines(self.statement)


def _field(label: str, value: str | None) -> list[str]:
    return f"{label}:  {value}".splitlines() if value else []


def statement_lines(statement: str | None) -> list[str]:
    """`STATEMENT:  first line`, the rest indented under it; a long one is cut (the output has it whole)."""
    text = (statement or "").strip()
    if not text:
        return []
    cut = len(text) > MAX_STATEMENT_CHARS
    lines = text[:MAX_STATEMENT_CHARS].splitlines()
    if len(lines) > MAX_STATEMENT_LINES:
        lines, cut = lines[:MAX_STATEMENT_LINES], True
    out = [f"STATEMENT:  {lines[0]}", *(f"            {line}" for line in lines[1:])]
    if cut:
        out.append("            ...")
    return out


def error_position(query: str, position: int) -> list[str]:
    """`LINE n: <the line>` and a caret under character `position` (1-based), as libpq prints
    them (reportErrorPosition: tabs as spaces, a long line cut to DISPLAY_SIZE around the spot).
    Every character counts one column (libpq counts East Asian wide characters as two)."""
    loc = position - 1
    chars = [" " if c == "\t" else c for c in query]
    if loc < 0 or loc > len(chars):
        return []
    line_no, begin, end = 1, 0, len(chars)
    for index, char in enumerate(chars):
        if char in "\r\n":
            if index < loc:
                if char == "\r" or index == 0 or chars[index - 1] != "\r":
                    line_no += 1
                begin = index + 1
            else:
                end = index
                break
    cut_begin = cut_end = False
    if end - begin > DISPLAY_SIZE:
        if begin + DISPLAY_SIZE >= loc + MIN_RIGHT_CUT:  # cutting the right end is enough
            end, cut_end = begin + DISPLAY_SIZE, True
        else:
            if loc + MIN_RIGHT_CUT < end:
                end, cut_end = loc + MIN_RIGHT_CUT, True
            if end - begin > DISPLAY_SIZE:
                begin, cut_begin = end - DISPLAY_SIZE, True
    prefix = f"LINE {line_no}: " + ("..." if cut_begin else "")
    text = "".join(chars[begin:end]) + ("..." if cut_end else "")
    return [prefix + text, " " * (len(prefix) + loc - begin) + "^"]


def context_after(lines: list[str], start: int) -> list[str]:
    """The lines under an error headline that belong to it (LINE/caret, DETAIL, HINT, ...)."""
    extra = []
    for line in lines[start : start + MAX_CONTEXT_LINES]:
        if not line.startswith(CONTEXT_PREFIXES):
            break
        extra.append(line)
    return extra


def scan_output(output: str) -> ErrorReport | None:
    """The last error a tool printed: a psql/libpq `ERROR:` line, or any line (a Python
    exception, say) followed by a `LINE n:`/`DETAIL:`/`HINT:` block; with the block."""
    lines = output.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        match = _HEADLINE_RE.match(line)
        opens_block = (line.strip() and not line.startswith(CONTEXT_PREFIXES) and index + 1 < len(lines)
                       and _CONTEXT_START_RE.match(lines[index + 1]))
        if match or opens_block:
            headline = match.group("headline") if match else line.strip()
            return ErrorReport(headline, tuple(context_after(lines, index + 1)))
    return None


def from_driver_text(text: str, fields: ServerError) -> tuple[str, list[str]]:
    """A libpq-formatted message (psycopg's str(), psycopg2's pgerror) as headline and lines:
    libpq placed the caret against the query it really sent. psycopg leaves out the severity."""
    lines = [line for line in text.rstrip().splitlines() if line.strip()]
    if not lines:
        return fields.headline, fields.lines()
    first = lines[0]
    headline = first if first.startswith(f"{fields.severity}:") else f"{fields.severity}:  {first}"
    return headline, lines[1:] + statement_lines(fields.statement)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def from_runner(data: Mapping[str, Any]) -> ErrorReport:
    """The report of a runner in the user's Python (host.PYTHON_ERROR_REPORTER's JSON):
    `error` (the exception, one line), `line` (in the step's file), and `server` (the
    PostgreSQL error's fields, `text` as the driver formatted it, `statement`) when there was one."""
    error = str(data.get("error") or "the tool failed")
    server = data.get("server")
    line = _int(data.get("line"))
    if not isinstance(server, Mapping) or not server.get("message"):
        return ErrorReport(error.splitlines()[0] if error.strip() else error, (), line)
    fields = ServerError(
        message=str(server["message"]), severity=_str(server.get("severity")) or "ERROR",
        sqlstate=_str(server.get("sqlstate")), detail=_str(server.get("detail")), hint=_str(server.get("hint")),
        position=_int(server.get("position")), internal_query=_str(server.get("internal_query")),
        internal_position=_int(server.get("internal_position")), context=_str(server.get("context")),
        statement=_str(server.get("statement")),
    )
    text = _str(server.get("text"))
    if text:
        headline, lines = from_driver_text(text, fields)
    else:
        headline, lines = fields.headline, fields.lines()
    return ErrorReport(headline, tuple(lines), line)
