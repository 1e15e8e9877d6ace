"""Keeping the state cache within its bounds (SPEC 10): `cache.capacity.max_bytes` and a
free-space reserve `cache.capacity.reserve_bytes` on the store's filesystem (at most a tenth
of that filesystem's size). The cap's default (`auto`) is the smaller of DEFAULT_MAX_BYTES and
a tenth of the store's filesystem; it is a soft bound: states are evicted to keep under it, but
when the states in use outgrow it a job goes on (`status` warns), whereas a configured cap and
the reserve are hard (the job fails with `NoSpace`).

Before a job builds anything and after each state it commits, the cache is measured: the real
allocated bytes of all states together (`SnapshotStore.allocated_bytes` in one call, so extents
shared between a state and its parent count once) against the cap, and the store's free space
against the reserve. When either is short, unreferenced leaf states go, least valuable first
(`sqlrs.domain.eviction`). When eviction cannot make enough room, the job fails with `NoSpace`
(code `no_space`) and nothing is evicted in vain.

A state is referenced when it is in use (StateCatalog.users: an instance was cloned from it, or
a running job lists it in its tasks, as a cached prefix or one it builds on) or has child states. Snapshot states
(`sqlrs snapshot`, kind `snapshot`) are never evicted: they hold what clients did to an instance
and cannot be rebuilt at any price; only `sqlrs rm` removes them (and with them, their ancestors
stay, as ancestors of any kept state do). References are
checked again right before each delete, holding the state's lock (StateCatalog.remove, shared
with builds and `sqlrs rm`); one lock serializes evictions, so two jobs never evict concurrently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from sqlrs.domain.errors import Conflict, NoSpace
from sqlrs.domain.eviction import Entry, choose_victims, reclaimable_bytes
from sqlrs.domain.model import State, StateKind
from sqlrs.domain.sizes import format_size
from sqlrs.ports.clock import Clock
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.catalog import StateCatalog

log = logging.getLogger("sqlrs.cache")

ROUNDS = 3  # measure, evict, measure again: sizes are estimates of what a delete frees
RESERVE_SHARE_MAX = 10  # the free-space reserve is at most 1/10 of the store's filesystem
DEFAULT_MAX_BYTES = 10 * 1024**3  # the default cap: at most this ...
DEFAULT_CAP_SHARE = 10  # ... and at most 1/10 of the store's filesystem


@attrs.frozen
class Limits:
    max_bytes: int  # 0: no cap
    reserve_bytes: int  # 0: no reserve
    default_cap: bool = False  # the default cap, a soft bound (its size is set by CacheService.limits)


def default_max_bytes(filesystem_bytes: int) -> int:
    """The default cap for a store on a filesystem of this size."""
    return min(DEFAULT_MAX_BYTES, filesystem_bytes // DEFAULT_CAP_SHARE)


@attrs.frozen
class Measure:
    cache_bytes: int
    free_bytes: int
    limits: Limits

    @property
    def over_cap(self) -> int:
        return self.cache_bytes - self.limits.max_bytes if self.limits.max_bytes > 0 else 0

    @property
    def below_reserve(self) -> int:
        return self.limits.reserve_bytes - self.free_bytes if self.limits.reserve_bytes > 0 else 0

    @property
    def needed(self) -> int:
        return max(0, self.over_cap, self.below_reserve)

    @property
    def hard(self) -> bool:
        """Whether a job must fail when eviction cannot free `needed`: not for the default cap alone."""
        return self.below_reserve > 0 or not self.limits.default_cap


class CacheService:
    def __init__(self, catalog: StateCatalog, clock: Clock, limits: Callable[[], Limits]):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = catalog.store
        self.layout = catalog.layout
        self.clock = clock
        self._limits = limits
        self._lock = threading.Lock()
        self.evicted_states = 0
        self.evicted_bytes = 0
        self._measured: tuple[frozenset[str], int] | None = None

    # -- hooks for PrepareService -------------------------------------------------------------
    def before_build(self, ctx: JobContext) -> None:
        self.enforce(ctx)

    def after_commit(self, ctx: JobContext, state: State) -> None:
        self.enforce(ctx)

    # -- measuring ----------------------------------------------------------------------------
    def cache_bytes(self, states: list[State] | None = None) -> int:
        """Real allocated bytes of all cached states together (shared extents once)."""
        states = self.repo.list_states() if states is None else states
        if not states:
            return 0
        # states never change, so the walk over their extents is redone only when the set does
        key = frozenset(state.id for state in states)
        remembered = self._measured
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        total = self.store.allocated_bytes([self.layout.abs(state.data_path) for state in states])
        self._measured = (key, total)
        return total

    def limits(self) -> Limits:
        """The configured bounds; the reserve is at most a tenth of the store's filesystem, so
        that the default (1 GiB) does not make a small dedicated store volume unusable."""
        configured = self._limits()
        reserve = configured.reserve_bytes
        if reserve > 0:
            reserve = min(reserve, self.store.total_bytes() // RESERVE_SHARE_MAX)
        if configured.default_cap:
            return Limits(default_max_bytes(self.store.total_bytes()), reserve, default_cap=True)
        return Limits(configured.max_bytes, reserve)

    def _measure(self, limits: Limits) -> Measure:
        cache = self.cache_bytes() if limits.max_bytes > 0 else 0
        free = self.store.free_bytes() if limits.reserve_bytes > 0 else 0
        return Measure(cache, free, limits)

    def entries(self, states: list[State] | None = None) -> list[Entry]:
        states = self.repo.list_states() if states is None else states
        pinned = self.catalog.users().ids()
        # a snapshot cannot be rebuilt: its value is unbounded, so it counts as pinned
        return [Entry(id=s.id, parent_id=s.parent_id, size_bytes=s.size_bytes, build_seconds=s.build_seconds,
                      last_used_at=s.last_used_at, hits=s.hits,
                      pinned=s.id in pinned or s.kind == StateKind.SNAPSHOT) for s in states]

    def usage(self) -> dict[str, Any]:
        """For `sqlrs status`: real cache size, bounds, what could be evicted, evictions so far."""
        states = self.repo.list_states()
        limits = self.limits()
        return {
            "states": len(states),
            "size_bytes": self.cache_bytes(states),
            "increments_bytes": sum(state.size_bytes for state in states),
            "max_bytes": limits.max_bytes,
            "max_bytes_source": "default" if limits.default_cap else "config",
            "reserve_bytes": limits.reserve_bytes,
            "evictable_bytes": reclaimable_bytes(self.entries(states)),
            "evicted_states": self.evicted_states,
            "evicted_bytes": self.evicted_bytes,
        }

    # -- evicting -----------------------------------------------------------------------------
    def make_room(self, ctx: JobContext | None, needed_bytes: int) -> list[str]:
        """A write ran out of space: evict what can go, least valuable first, until `needed_bytes`
        are free beyond the reserve (whatever the cap says); the evicted ids. Raises NoSpace when
        nothing can be evicted."""
        limits = self.limits()
        evicted: list[str] = []
        with self._lock:
            for _round in range(ROUNDS):
                short = needed_bytes + limits.reserve_bytes - self.store.free_bytes()
                if short <= 0:
                    break
                entries = self.entries()
                victims = choose_victims(entries, short, self.clock.now())
                deleted = [victim.id for victim in victims if self._evict(victim, ctx)]
                evicted += deleted
                if not deleted:
                    break
                self.store.settle()
        free = self.store.free_bytes()
        if not evicted and needed_bytes + limits.reserve_bytes > free:
            raise NoSpace(f"the store's filesystem has {format_size(free)} free, {format_size(needed_bytes)} are "
                          f"needed, and no state can be evicted: they are in use by instances or running jobs, "
                          f"have dependent states, or are snapshots",
                          hint="free disk space, grow the store volume, or remove instances (sqlrs rm ID) so that "
                               "their states can be evicted",
                          details={"needed_bytes": needed_bytes, "free_bytes": free, "reason": "full"})
        return evicted

    def enforce(self, ctx: JobContext | None = None) -> list[str]:
        """Evict until the cache is under its cap and the reserve is free; the evicted ids.

        Raises NoSpace when the unreferenced leaves cannot make enough room (then nothing is
        evicted in this round)."""
        limits = self.limits()
        if limits.max_bytes <= 0 and limits.reserve_bytes <= 0:
            return []
        evicted: list[str] = []
        with self._lock:
            for _round in range(ROUNDS):
                measure = self._measure(limits)
                if measure.needed <= 0:
                    return evicted
                entries = self.entries()
                available = reclaimable_bytes(entries)
                if available < measure.needed and measure.hard:
                    raise self._no_space(measure, available, entries)
                victims = choose_victims(entries, measure.needed, self.clock.now())
                deleted = [victim for victim in victims if self._evict(victim, ctx)]
                evicted += [victim.id for victim in deleted]
                if not deleted:
                    break
                if measure.below_reserve > 0:
                    self.store.settle()  # deleted space shows in free_bytes only when released
            measure = self._measure(limits)
            if measure.needed > 0 and measure.hard:
                entries = self.entries()
                raise self._no_space(measure, reclaimable_bytes(entries), entries)
        return evicted

    def _evict(self, victim: Entry, ctx: JobContext | None) -> bool:
        try:
            state = self.catalog.remove(victim.id, unless_used=True)
        except Conflict:
            return False  # a job is checking or building on it right now
        if state is None:
            return False  # became referenced since the victims were chosen
        self.evicted_states += 1
        self.evicted_bytes += max(0, state.size_bytes)
        text = (f"evicted state {state.id[:12]} ({state.source}, {format_size(state.size_bytes)}, "
                f"built in {state.build_seconds}s) to keep the cache within its bounds")
        log.info("%s", text)
        if ctx is not None:
            ctx.emit("log", stream="engine", text=text)
        return True

    def _no_space(self, measure: Measure, available: int, entries: list[Entry]) -> NoSpace:
        pinned = sorted(entry.id for entry in entries if entry.pinned)
        details: dict[str, Any] = {
            "needed_bytes": measure.needed,
            "available_bytes": available,
            "cache_bytes": measure.cache_bytes,
            "max_bytes": measure.limits.max_bytes,
            "free_bytes": measure.free_bytes,
            "reserve_bytes": measure.limits.reserve_bytes,
            "pinned_states": pinned,
        }
        can = f"only {format_size(available)} can be evicted" if available else "no state can be evicted"
        why = "the others are in use by instances or running jobs, have dependent states, or are snapshots"
        if measure.over_cap >= measure.below_reserve:
            details["reason"] = "max_bytes"
            return NoSpace(
                f"the state cache ({format_size(measure.cache_bytes)}) is over cache.capacity.max_bytes "
                f"({format_size(measure.limits.max_bytes)}) by {format_size(measure.over_cap)} and {can}: {why}",
                hint="raise the cap (sqlrs config set cache.capacity.max_bytes 20G) or remove instances "
                     "(sqlrs ls; sqlrs rm ID) so that their states can be evicted",
                details=details,
            )
        details["reason"] = "reserve_bytes"
        return NoSpace(
            f"the store has {format_size(measure.free_bytes)} free, less than cache.capacity.reserve_bytes "
            f"({format_size(measure.limits.reserve_bytes)}), and {can}: {why}",
            hint="free disk space, grow the store volume, lower cache.capacity.reserve_bytes, or remove "
                 "instances (sqlrs rm ID) so that their states can be evicted",
            details=details,
        )
