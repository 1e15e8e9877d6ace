"""The bookkeeping of warm instances (see services/instances/pool.py): one entry per state, and the bounds
(`warm.*`) applied to all of them. Pure bookkeeping: it starts and removes nothing itself, it says
which instances are surplus and which state wants one next. Not thread-safe: PoolService calls
it under its condition's lock, and `changed` is that condition's notify_all.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from sqlrs.domain.demand import BUSY, Level, Need, recent

log = logging.getLogger("sqlrs.pool")

HOT_SECONDS = 60.0  # a state claimed twice within this long keeps one more warm for this long


@attrs.frozen
class WarmLimits:
    """The configured bounds (config keys `warm.*`), read again on every worker pass."""

    enabled: bool = True
    per_state: int = 1
    max_states: int = 4
    max_instances: int = 8
    idle_seconds: int = 600


@attrs.define
class Pool:
    """The warm instances of one state: an explicit pool (`size`, `holders`) and/or automatic (`auto`)."""

    state_id: str
    size: int  # explicit pool size (0: none asked for)
    runtime: str
    image: str | None
    auto: bool = False  # in the automatic warm set: recently built or hit
    hot_until: float = 0.0  # claimed back to back: one more is kept warm until then
    last_claim: float = 0.0
    claims: deque[float] = attrs.field(factory=deque)  # when the claims of the last HOT_SECONDS came
    holders: set[str] = attrs.field(factory=set)
    ready: list[str] = attrs.field(factory=list)  # warm instance ids, oldest first
    starting: int = 0
    waiting: int = 0  # claims waiting for a warm instance being started
    hits: int = 0
    misses: int = 0
    created: int = 0
    last_used: float = attrs.field(factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    closed: bool = False
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False, eq=False)  # the service's
    need: Callable[[str], Need] = attrs.field(default=lambda state_id: BUSY, repr=False, eq=False)  # the demand's

    @property
    def explicit(self) -> bool:
        return self.size > 0 or bool(self.holders)

    def target(self, limits: WarmLimits) -> int:
        if not limits.enabled:
            return 0
        automatic = 0
        need = self.need(self.state_id) if self.auto else None
        if need is not None and need.level is Level.IDLE:
            automatic = limits.per_state  # nobody is testing: the idle level
        elif need is not None and need.level is Level.BUSY:
            now = self.clock()
            automatic = limits.per_state + (1 if now < self.hot_until else 0)
            claimed = recent(self.claims, now, HOT_SECONDS)
            if limits.per_state > 0:
                # demand: as many as were claimed in the last HOT_SECONDS (a test suite's run), or
                # in the state's previous burst once a session holds it again (its next run); the
                # total bound warm.max_instances caps it
                automatic = max(automatic, claimed, need.expected)
        return max(self.size, automatic)

    def to_json(self, idle_seconds: float) -> dict[str, Any]:
        return {
            "state_id": self.state_id, "size": self.size, "ready": len(self.ready), "starting": self.starting,
            "runtime": self.runtime, "image": self.image, "holders": len(self.holders), "hits": self.hits,
            "misses": self.misses, "created": self.created, "error": self.error,
            "drains_in_seconds": round(max(0.0, idle_seconds - (self.clock() - self.last_used)), 1)
            if idle_seconds > 0 else None,
        }

    def warm_json(self, limits: WarmLimits) -> dict[str, Any]:
        return {"state_id": self.state_id, "runtime": self.runtime, "image": self.image, "ready": len(self.ready),
                "starting": self.starting, "target": self.target(limits), "automatic": self.auto,
                "hot": self.clock() < self.hot_until,
                "pool_size": self.size, "holders": len(self.holders), "hits": self.hits, "misses": self.misses,
                "instance_ids": list(self.ready), "error": self.error,
                "idle_seconds": round(self.clock() - self.last_used, 1)}


class WarmSet:
    """The entries of the states that have (or want) warm instances, by state id."""

    def __init__(self, monotonic: Callable[[], float], changed: Callable[[], None],
                 need: Callable[[str], Need] = lambda state_id: BUSY):
        self.monotonic = monotonic
        self.need = need  # the demand's level of a state (services/instances/demand.py)
        self.changed = changed  # wakes whoever waits for an entry (called with the lock held)
        self.pools: dict[str, Pool] = {}

    def close(self, pool: Pool) -> list[str]:
        """Forget the state's warm entry; return its ready instances for removal."""
        pool.closed = True
        pool.auto = False
        spares, pool.ready = pool.ready, []
        if self.pools.get(pool.state_id) is pool:
            del self.pools[pool.state_id]
        self.changed()
        return spares

    def trim_pool(self, pool: Pool, limits: WarmLimits) -> list[str]:
        """The pool's ready instances beyond its target (oldest first); an entry
        that wants none any more is forgotten."""
        target = pool.target(limits)
        surplus: list[str] = []
        while pool.ready and len(pool.ready) > target:
            surplus.append(pool.ready.pop(0))
        if target == 0 and (not pool.explicit or not limits.enabled):
            surplus += self.close(pool)
        return surplus

    def trim(self, limits: WarmLimits) -> list[str]:
        """Apply the bounds (idle expiry, targets, states, the total); the surplus."""
        now = self.monotonic()
        surplus: list[str] = []
        for pool in list(self.pools.values()):
            if limits.idle_seconds > 0 and now - pool.last_used > limits.idle_seconds:
                log.info("warm instances of state %s unused for %.0fs: removing them", pool.state_id[:12],
                         now - pool.last_used)
                surplus += self.close(pool)
            else:
                surplus += self.trim_pool(pool, limits)
        surplus += self.bound_states(limits)
        total = sum(len(p.ready) + p.starting for p in self.pools.values())
        # over the total: the least valuable go first (automatic before pools, least recent first)
        for pool in sorted(self.pools.values(), key=lambda p: (p.explicit, p.last_used)):
            while total > max(0, limits.max_instances) and pool.ready:
                surplus.append(pool.ready.pop(0))
                total -= 1
        # at the total: a state that wants more takes what automatic states used less recently hold
        # beyond warm.per_state (their demand part), so one suite's burst does not keep the next
        # state cold for a minute
        wanting = [p for p in self.pools.values() if not p.closed and len(p.ready) + p.starting < p.target(limits)]
        if wanting and total >= limits.max_instances:
            newest = max(p.last_used for p in wanting)
            for pool in sorted(self.pools.values(), key=lambda p: p.last_used):
                if pool.explicit or pool.last_used >= newest:
                    continue
                while len(pool.ready) > limits.per_state and total >= limits.max_instances:
                    surplus.append(pool.ready.pop(0))
                    total -= 1
        return surplus

    def next_wanted(self, limits: WarmLimits) -> Pool | None:
        """The state that needs a warm instance most, counted as starting."""
        if not limits.enabled:
            return None
        now = self.monotonic()
        total = sum(len(p.ready) + p.starting for p in self.pools.values())
        if total >= limits.max_instances:
            return None
        wanting = [p for p in self.pools.values()
                   if len(p.ready) + p.starting < p.target(limits) and p.retry_at <= now and not p.closed]
        if not wanting:
            return None
        # claims waiting first, then pools, then the fewest ready, then the most recent
        pool = min(wanting, key=lambda p: (-p.waiting, not p.explicit, len(p.ready) + p.starting, -p.last_used))
        pool.starting += 1
        return pool

    def bound_states(self, limits: WarmLimits) -> list[str]:
        """Keep at most `max_states` states in the automatic set (the most recent)."""
        auto = sorted((p for p in self.pools.values() if p.auto), key=lambda p: p.last_used, reverse=True)
        surplus: list[str] = []
        for pool in auto[max(0, limits.max_states):]:
            pool.auto = False
            surplus += self.trim_pool(pool, limits)
        return surplus

    def entry(self, state_id: str, runtime: str, image: str | None, doomed: list[str]) -> Pool:
        """The state's warm entry, made (or made again for another runtime); the
        ready instances of an entry made again go to `doomed`.

        Any image reference that gives the state will do: the state's id pins the image's content."""
        pool = self.pools.get(state_id)
        if pool is not None and not pool.closed and pool.runtime == runtime:
            pool.image = image or pool.image
            return pool
        if pool is not None:
            doomed += self.close(pool)
        pool = Pool(state_id=state_id, size=0, runtime=runtime, image=image, last_used=self.monotonic(),
                    clock=self.monotonic, need=self.need)
        self.pools[state_id] = pool
        return pool
