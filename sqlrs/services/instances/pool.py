"""Warm instances: started instances of hot states, kept ready so that a hit claims one in milliseconds.

One mechanism, two ways in:

- automatically: after a state is built or hit (an instance of it is created, by a prepare job or
  `POST /v1/instances`), `warm.per_state` instances of it are kept started (cloned, server up,
  password set) for the `warm.max_states` most recently used states, until a state is not used
  for `warm.idle_seconds`;
- explicitly: a *pool* (`PUT /v1/pools/{state_id}`, the Python library's `set_pool`, the pytest
  plugin) asks for `size` warm instances of one state on top of that, renewed by its holders and
  drained when the last one leaves (`DELETE ?holder=`) or nobody used it for `warm.idle_seconds`.

Per state the engine keeps `max(pool size, warm.per_state if the state is recently used)` warm
instances; while the state is busy (`sqlrs.domain.demand`: a session holds it, or it was claimed in
the last seconds) one more when it is *hot* (claimed twice within a minute, or before its
replacement was ready), and as many as were claimed in the last minute or in the state's previous
burst once a session holds it again (a suite's next run); at most `warm.max_instances` in all
(pools first, then states by recency). Once nobody is testing, only the `warm.idle_states` most
recently used states keep `warm.per_state`, and a superseded state none. `warm.enabled false`
turns everything off. The workers re-read these bounds all the time: lowering
them (or turning warm instances off) removes the surplus within a second.

`claim` hands one out: it flips the instance's `pooled` flag, applies the caller's name, TTL,
ephemeral flag and job, and wakes a worker to start a replacement. When none is ready but one is
being started that no other claim waits for, the claim waits for it (never slower than starting one);
otherwise the caller starts an instance the ordinary way.

Warm instances are real instances marked `pooled` (the metadata's existing column) but not user
instances: listings leave them out, `status` shows them. Nothing leaks: an engine that stops removes
them, one that starts removes those a killed engine left (`recover`), removing or evicting a state
removes its own (`discard`), and a warm instance that is found dead is dropped.

The entries and the bounds are bookkeeping in `services/instances/warm_set.py`; the threads that
start and remove the instances are in `warm_workers.py`; this module takes requests and hands out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlrs.domain.errors import Conflict, NotFound, UsageError
from sqlrs.domain.model import Instance, InstanceStatus, NameBinding, State
from sqlrs.services.instances.warm_set import HOT_SECONDS
from sqlrs.services.instances.warm_workers import WarmWorkers

log = logging.getLogger("sqlrs.pool")

CLAIM_WAIT_SECONDS = 120.0  # a claim waits this long at most for the warm instance being started for it


class PoolService(WarmWorkers):
    """The warm instances of the engine (automatic and pools); see the module docstring."""

    # -- explicit pools ----------------------------------------------------------------------------
    def configure(self, state: State, size: int, image: str | None = None, holder: str | None = None) -> dict[str, Any]:
        if size < 0:
            raise UsageError("a pool's size must not be negative")
        limits = self._limits()
        if not limits.enabled or limits.max_instances <= 0:
            raise Conflict("warm instances are turned off (warm.enabled false or warm.max_instances 0)",
                           hint="sqlrs config set warm.enabled true")
        if size > limits.max_instances:
            raise UsageError(f"pool size {size} exceeds warm.max_instances ({limits.max_instances})",
                             hint=f"sqlrs config set warm.max_instances {size}")
        runtime, identity = self.resolve(state, image)
        with self._cond:
            pool = self._set.entry(state.id, runtime.name, identity.image, self._doomed)
            pool.size = size
            pool.image = identity.image
            pool.last_used = self._monotonic()
            if holder:
                pool.holders.add(holder)
            pool.retry_at = 0.0
            self._cond.notify_all()
            data = pool.to_json(limits.idle_seconds)
        if size == 0 and not holder:
            return self.release(state.id, None) or data
        return data

    def release(self, state_id: str, holder: str | None, wait: bool = True) -> dict[str, Any] | None:
        """Remove `holder`; when no holder is left (or at once without a holder) the pool ends.

        The state's automatic warm instance (if it is recently used) stays; the pool's others go.
        `wait=False` answers at once and removes them in the background (`close` waits for that)."""
        with self._cond:
            pool = self._pools.get(state_id)
            if pool is None or not pool.explicit:
                return None
            if holder:
                pool.holders.discard(holder)
                if pool.holders:
                    return pool.to_json(self._limits().idle_seconds)
            pool.holders.clear()
            pool.size = 0
            data = pool.to_json(self._limits().idle_seconds)
            surplus = self._set.trim_pool(pool, self._limits())
        if wait:
            self._drain(surplus, pool)
        else:
            drainer = threading.Thread(target=self._drain, args=(surplus, pool), name="sqlrs-pool-drain",
                                       daemon=True)
            with self._cond:
                self._drainers = [thread for thread in self._drainers if thread.is_alive()] + [drainer]
            drainer.start()
        return data

    def get(self, state_id: str) -> dict[str, Any]:
        with self._cond:
            pool = self._pools.get(state_id)
            if pool is None or not pool.explicit:
                raise NotFound(f"no pool for state {state_id[:12]}", hint="list them: GET /v1/pools")
            return pool.to_json(self._limits().idle_seconds)

    def pools(self) -> list[dict[str, Any]]:
        """The explicit pools (the automatic warm instances are in `status`)."""
        idle = self._limits().idle_seconds
        with self._cond:
            return [pool.to_json(idle) for pool in self._pools.values() if pool.explicit]

    def status(self) -> dict[str, Any]:
        """For `sqlrs status`: the bounds and, per state, its warm instances."""
        limits = self._limits()
        with self._cond:
            states = [pool.warm_json(limits) for pool in self._pools.values()]
        return {"enabled": limits.enabled, "per_state": limits.per_state, "max_states": limits.max_states,
                "max_instances": limits.max_instances, "idle_seconds": limits.idle_seconds,
                "instances": sum(s["ready"] for s in states), "starting": sum(s["starting"] for s in states),
                "states": states}

    def wait_ready(self, state_id: str, count: int, timeout: float) -> dict[str, Any]:
        """Block until the state has `count` warm instances ready (or the timeout passes)."""
        deadline = self._monotonic() + timeout
        with self._cond:
            while True:
                pool = self._pools.get(state_id)
                if pool is None:
                    raise NotFound(f"no pool for state {state_id[:12]}")
                limits = self._limits()
                if len(pool.ready) >= min(count, pool.target(limits)) or self._monotonic() >= deadline:
                    return pool.to_json(limits.idle_seconds)
                if pool.error and pool.starting == 0 and pool.failures > 2:
                    raise Conflict(f"the pool cannot start instances: {pool.error}")
                self._cond.wait(min(1.0, max(0.0, deadline - self._monotonic())))

    # -- the automatic warm set --------------------------------------------------------------------
    def used(self, state: State, runtime: str, image: str | None) -> None:
        """An instance of `state` was made (a build or a hit): keep warm instances of it ready."""
        if self.demand is not None:
            self.demand.claimed(state.id)
        limits = self._limits()
        if not limits.enabled or limits.per_state <= 0 or limits.max_states <= 0:
            return
        with self._cond:
            pool = self._pools.get(state.id)
            if pool is not None and pool.auto and pool.runtime == runtime:
                pool.last_used = self._monotonic()
                return
            pool = self._set.entry(state.id, runtime, image, self._doomed)
            pool.auto = True
            pool.last_used = self._monotonic()
            surplus = self._set.bound_states(limits)
            self._cond.notify_all()
        self._remove_later(surplus)

    def discard(self, state_id: str) -> None:
        """The state goes (removed or evicted): remove its warm instances, also those being started."""
        with self._cond:
            pool = self._pools.get(state_id)
            if pool is None:
                return
            surplus = self._set.close(pool)
        self._remove(surplus)
        self._wait_started(pool)

    # -- claiming ----------------------------------------------------------------------------------
    def claim(self, state_id: str, ttl_seconds: int, name: str | None = None, *, ephemeral: bool = False,
              job_id: str | None = None, runtime: str | None = None,
              wait: float = CLAIM_WAIT_SECONDS) -> Instance | None:
        """A warm instance of the state, now an ordinary instance; None when none is ready.

        `runtime`: what the caller would start on; a warm instance of another runtime is not used."""
        if not self._pools.get(state_id) or not self._limits().enabled:
            return None  # (a lock-free first look: most creates of a cold state end here)
        deadline = self._monotonic() + wait
        while True:
            with self._cond:
                pool = self._pools.get(state_id)
                if pool is None or pool.closed or (runtime is not None and pool.runtime != runtime):
                    return None
                now = pool.last_used = self._monotonic()
                if pool.auto and (not pool.ready or now - pool.last_claim < HOT_SECONDS):
                    # claims come faster than one replacement starts (tests back to back): one more
                    pool.hot_until = now + HOT_SECONDS
                pool.last_claim = now
                pool.claims.append(now)
                if not pool.ready and pool.starting > pool.waiting:
                    # one being started that no other claim waits for: it is nearer than a new one
                    pool.waiting += 1
                    try:
                        while not pool.ready and pool.starting > 0 and not pool.closed \
                                and self._monotonic() < deadline:
                            self._cond.wait(min(1.0, max(0.0, deadline - self._monotonic())))
                    finally:
                        pool.waiting -= 1
                if not pool.ready:
                    pool.misses += 1
                    self._cond.notify_all()
                    return None
                instance_id = pool.ready.pop(0)
                pool.hits += 1
                self._cond.notify_all()  # a worker starts the replacement
            instance = self._hand_out(instance_id, ttl_seconds, name, ephemeral, job_id)
            if instance is not None:
                return instance
            # the warm instance vanished or died: try the next one

    def _hand_out(self, instance_id: str, ttl_seconds: int, name: str | None, ephemeral: bool,
                  job_id: str | None) -> Instance | None:
        instance = self.repo.get_instance(instance_id)
        if instance is None or not instance.pooled:
            return None
        if self.instances.live_status(instance) != InstanceStatus.RUNNING:
            log.info("warm instance %s is not running any more; dropping it", instance_id)
            self._remove([instance_id])
            return None
        now = self.clock.now()
        instance.pooled = False
        instance.ttl_seconds = ttl_seconds
        instance.ephemeral = ephemeral
        instance.job_id = job_id
        instance.created_at = now  # for its user it starts now
        instance.last_used_at = now
        self.repo.update_instance(instance)
        if name:
            self.repo.bind_name(NameBinding(name=name, instance_id=instance.id, created_at=now))
            instance.name = name
        self.repo.touch_state(instance.state_id, now, hit=False)
        self.on_claim(instance)
        return instance
