"""Per-state locks shared by builds and removals, so neither sees the other half-done."""

from __future__ import annotations

import threading


class StateLocks:
    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, state_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(state_id, threading.Lock())
