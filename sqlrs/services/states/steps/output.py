"""A tool's output during a step (psql, or a host tool): forwarded as job events, whole lines as
they arrive (those of one read in one event: a migration history's command tags would otherwise
cost an event per line), the first lines only, and kept (bounded) for the step's error message."""

from __future__ import annotations

from collections.abc import Callable

OUTPUT_LINES_KEPT = 200


class OutputCollector:
    """Keeps a tool's output for error messages and forwards whole lines as they arrive."""

    def __init__(self, forward: Callable[[str, str], None]):
        self._forward = forward
        self._kept: list[str] = []
        self._partial: dict[str, str] = {}
        self._forwarded = 0

    def feed(self, stream: str, data: bytes) -> None:
        text = self._partial.get(stream, "") + data.decode("utf-8", "replace")
        *lines, self._partial[stream] = text.split("\n")
        self._take(stream, lines)

    def _take(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        self._kept.extend(lines)
        if len(self._kept) > 4 * OUTPUT_LINES_KEPT:
            del self._kept[: len(self._kept) - 2 * OUTPUT_LINES_KEPT]
        room = OUTPUT_LINES_KEPT - self._forwarded
        if room > 0:
            self._forward(stream, "\n".join(lines[:room]))
        if 0 <= room < len(lines):  # the limit is crossed now: say so, once
            self._forward("note", "(more output not shown)")
        self._forwarded += len(lines)

    def flush(self) -> None:
        for stream, rest in list(self._partial.items()):
            if rest:
                self._take(stream, [rest])
        self._partial.clear()

    def text(self) -> str:
        return "\n".join(self._kept)

