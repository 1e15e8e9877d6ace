"""A tool's output during a step (psql, or a host tool): forwarded as job events, whole lines, the
first lines only, and kept (bounded) for the step's error message.

A migration history's command tags would otherwise cost an event (a metadata write and a wake-up
of every follower) per line: the lines of one read go in one event, and with a `window` the lines
of several reads do, until the oldest of them has waited that long. A caller that gives a window
calls `tick` while the tool is quiet, so nothing waits much longer than the window."""

from __future__ import annotations

import time
from collections.abc import Callable

OUTPUT_LINES_KEPT = 200
WINDOW = 0.1  # seconds a line may wait for others to share its event (host tools, the build's psql)


class OutputCollector:
    """Keeps a tool's output for error messages and forwards whole lines as they arrive."""

    def __init__(self, forward: Callable[[str, str], None], window: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self._forward = forward
        self._window = window
        self._clock = clock
        self._kept: list[str] = []
        self._partial: dict[str, str] = {}
        self._pending: list[tuple[str, list[str]]] = []  # (stream, lines), in the order they came
        self._pending_since = 0.0
        self._forwarded = 0

    def feed(self, stream: str, data: bytes) -> None:
        text = self._partial.get(stream, "") + data.decode("utf-8", "replace")
        *lines, self._partial[stream] = text.split("\n")
        self._take(stream, lines)
        self.tick()

    def tick(self) -> None:
        """Forward what has waited for the window (the caller's loop calls it while the tool is quiet)."""
        if self._pending and self._clock() - self._pending_since >= self._window:
            self._send()

    def _take(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        self._kept.extend(lines)
        if len(self._kept) > 4 * OUTPUT_LINES_KEPT:
            del self._kept[: len(self._kept) - 2 * OUTPUT_LINES_KEPT]
        if not self._pending:
            self._pending_since = self._clock()
        if self._pending and self._pending[-1][0] == stream:
            self._pending[-1][1].extend(lines)
        else:
            self._pending.append((stream, list(lines)))

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        for stream, lines in pending:
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
        self._send()

    def text(self) -> str:
        return "\n".join(self._kept)
