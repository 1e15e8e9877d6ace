"""Which cached states to evict, and in which order (config cache.capacity.*). Pure: no I/O, no clock.

Only *unreferenced leaves* may go: states with no instances, not used by a running job
(`pinned`) and without child states still in the cache. Evicting a leaf can turn its parent into
a leaf, which then competes with the others; ancestors of a pinned state never become leaves.

Among the candidates the least valuable goes first. A state's value is what keeping it saves per
byte it occupies:

    value = (build_seconds + REBUILD_OVERHEAD) * recency * frequency / size_bytes
    recency   = 0.5 ** (seconds since last use / half_life)
    frequency = 1 + log2(1 + hits)

so a big state that was cheap to build and has not been used for a while goes before a small,
expensive or recently used one. `size_bytes` is what evicting the state frees: its increment over
its parent (a leaf's blocks shared with its parent stay allocated by the parent).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import attrs

# A rebuild always pays a server start and a commit, however small the step.
REBUILD_OVERHEAD_SECONDS = 1.0
# Recency halves a state's value every `half_life` seconds since its last use.
DEFAULT_HALF_LIFE_SECONDS = 6 * 3600.0
# Sizes below one page are treated as one page (no division by zero, no infinite value).
MIN_SIZE_BYTES = 4096


@attrs.frozen
class Entry:
    """What the policy needs to know about one cached state."""

    id: str
    parent_id: str | None
    size_bytes: int  # bytes freed by evicting it (its increment over its parent)
    build_seconds: float  # time it took to build from its parent
    last_used_at: datetime
    hits: int = 0
    pinned: bool = False  # it has instances, or a running job uses it


def value(entry: Entry, now: datetime, half_life_seconds: float = DEFAULT_HALF_LIFE_SECONDS) -> float:
    """Worth of keeping `entry` per byte (higher: keep longer), as a natural logarithm of the
    formula in the module docstring, so that months-old states still compare (no underflow)."""
    age = max(0.0, (now - entry.last_used_at).total_seconds())
    log_recency = -math.log(2) * age / half_life_seconds if half_life_seconds > 0 else 0.0
    frequency = 1.0 + math.log2(1 + max(0, entry.hits))
    cost = max(0.0, entry.build_seconds) + REBUILD_OVERHEAD_SECONDS
    return math.log(cost) + log_recency + math.log(frequency) - math.log(max(entry.size_bytes, MIN_SIZE_BYTES))


def _children(entries: Sequence[Entry]) -> dict[str, int]:
    ids = {entry.id for entry in entries}
    counts = dict.fromkeys(ids, 0)
    for entry in entries:
        if entry.parent_id is not None and entry.parent_id in ids and entry.parent_id != entry.id:
            counts[entry.parent_id] += 1
    return counts


def choose_victims(
    entries: Iterable[Entry],
    bytes_needed: int,
    now: datetime,
    half_life_seconds: float = DEFAULT_HALF_LIFE_SECONDS,
) -> list[Entry]:
    """States to evict, in order, until their sizes add up to `bytes_needed`.

    Greedy: always the least valuable state that is an unpinned leaf once the states before it
    are gone. Stops as soon as enough is freed; returns every evictable state when even that is
    not enough (the caller decides whether to go ahead) and nothing when `bytes_needed <= 0`.
    Entries with the same id count once (the first).
    """
    if bytes_needed <= 0:
        return []
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.id, entry)
    by_id = unique
    children = _children(list(by_id.values()))

    def key(entry: Entry) -> tuple[float, datetime, str]:
        return (value(entry, now, half_life_seconds), entry.last_used_at, entry.id)

    heap = [(key(e), e.id) for e in by_id.values() if not e.pinned and children[e.id] == 0]
    heapq.heapify(heap)
    victims: list[Entry] = []
    freed = 0
    while heap and freed < bytes_needed:
        _key, victim_id = heapq.heappop(heap)
        victim = by_id[victim_id]
        victims.append(victim)
        freed += max(0, victim.size_bytes)
        parent_id = victim.parent_id
        if parent_id is not None and parent_id in by_id and parent_id != victim_id:
            children[parent_id] -= 1
            parent = by_id[parent_id]
            if children[parent_id] == 0 and not parent.pinned:
                heapq.heappush(heap, (key(parent), parent_id))
    return victims


def reclaimable_bytes(entries: Iterable[Entry]) -> int:
    """Bytes that evicting every evictable state would free (0: nothing can go)."""
    listed = list(entries)
    if not listed:
        return 0
    now = max(entry.last_used_at for entry in listed)  # the order does not matter here
    return sum(max(0, entry.size_bytes) for entry in choose_victims(listed, 1 << 62, now))
