"""What the servers cost in memory, read from the operating system (`sqlrs status`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs


@attrs.frozen
class MemoryUse:
    """Memory of a set of servers, every process of each (postmaster, backends, workers) counted.

    `rss_bytes` sums each process's resident set, so memory they share (shared buffers, the
    binary) counts once per process; `pss_bytes` divides shared pages among the processes that map
    them (None when it cannot be read, e.g. another user's processes for an unprivileged engine)."""

    processes: int
    rss_bytes: int
    pss_bytes: int | None


@attrs.frozen
class ServerRef:
    """A running server as the metadata names it: its runtime and runtime_ref (the postmaster's
    pid for native servers, the container id for docker and podman)."""

    runtime: str
    ref: str


class ServerMemory(Protocol):
    def memory(self, servers: Sequence[ServerRef]) -> MemoryUse:
        """The memory the servers' processes use now; servers that are gone count nothing."""
        ...
