"""A tool's output during a step (psql, or a host tool): forwarded line by line as job events,
the first lines only, and kept (bounded) for the step's error message."""

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
        for line in lines:
            self._take(stream, line)

    def _take(self, stream: str, line: str) -> None:
        self._kept.append(line)
        if len(self._kept) > 4 * OUTPUT_LINES_KEPT:
            del self._kept[: len(self._kept) - 2 * OUTPUT_LINES_KEPT]
        if self._forwarded < OUTPUT_LINES_KEPT:
            self._forward(stream, line)
            self._forwarded += 1
        elif self._forwarded == OUTPUT_LINES_KEPT:
            self._forward("note", "(more output not shown)")
            self._forwarded += 1

    def flush(self) -> None:
        for stream, rest in list(self._partial.items()):
            if rest:
                self._take(stream, rest)
        self._partial.clear()

    def text(self) -> str:
        return "\n".join(self._kept)

