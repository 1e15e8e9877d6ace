"""Per-state locks shared by builds and removals, so neither sees the other half-done."""

from __future__ import annotations

import threading
import weakref


class StateLocks:
    def __init__(self) -> None:
        # a lock lives while someone holds or waits for it: one per state ever built would pile up
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def get(self, state_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(state_id, threading.Lock())
