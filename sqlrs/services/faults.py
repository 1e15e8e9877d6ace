"""Named crash points for the fault-injection suite (tests/faults).

`SQLRS_CRASH_AT=<point>` makes the engine kill itself with SIGKILL when it reaches that point,
so tests can crash it at exact moments (between cloning and renaming a state, say) instead of
hoping a timed `kill -9` lands there. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("commit:cloned", "commit:renamed", "pull:transferring", "pull:downloaded", "pull:applied")


def crash_point(name: str) -> None:
    if os.environ.get("SQLRS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
