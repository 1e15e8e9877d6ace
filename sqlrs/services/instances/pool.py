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

The entries and the bounds are bookkeeping in `services/instances/warm_set.py`; this module starts, hands
out and removes the instances.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlrs.domain.errors import Conflict, NotFound, SqlrsError, UsageError
from sqlrs.domain.model import Instance, InstanceStatus, NameBinding, State
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.demand import DemandService
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.warm_set import HOT_SECONDS, Pool, WarmLimits, WarmSet

log = logging.getLogger("sqlrs.pool")

CLAIM_WAIT_SECONDS = 120.0  # a claim waits this long at most for the warm instance being started for it
MAX_BACKOFF_SECONDS = 60.0
PRUNE_SECONDS = 10.0  # how often ready warm instances are checked against the metadata
WORKERS = 1
LIMITS_TTL = 1.0  # seconds the warm.* configuration is cached


class PoolService:
    """The warm instances of the engine (automatic and pools); see the module docstring."""

    def __init__(
        self,
        repo: StatesAndInstances,
        instances: ServerInstances,
        resolve: Callable[[State, str | None], tuple[Runtime, RuntimeIdentity]],
        clock: Clock,
        limits: Callable[[], WarmLimits] = WarmLimits,
        on_claim: Callable[[Instance], None] = lambda instance: None,
        workers: int = WORKERS,
        monotonic: Callable[[], float] = time.monotonic,
        demand: DemandService | None = None,
    ):
        # idle expiry, back-off and the bounds' cache: the Clock port's monotonic in the engine
        self._monotonic = monotonic
        self.repo = repo
        self.instances = instances
        self.resolve = resolve
        self.clock = clock
        self.limits = limits
        self.on_claim = on_claim
        self._workers = workers
        self.demand = demand
        self._set = WarmSet(monotonic, lambda: self._cond.notify_all(),
                            **({"need": demand.need} if demand is not None else {}))
        self._pools = self._set.pools
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._drainers: list[threading.Thread] = []  # background drains of released pools
        self._doomed: list[str] = []  # warm instances to remove (surplus), taken by a worker
        self._pruned_at = monotonic()
        self._cached_limits: tuple[float, WarmLimits] | None = None

    def _limits(self) -> WarmLimits:
        """The bounds, read at most once a second (a hit asks too); `wake` reads them again."""
        now = self._monotonic()
        cached = self._cached_limits
        if cached is not None and now - cached[0] < LIMITS_TTL:
            return cached[1]
        try:
            limits = self.limits()
        except Exception:  # an unreadable config must not stop the workers: the defaults then
            log.exception("cannot read the warm.* configuration")
            limits = WarmLimits()
        self._cached_limits = (now, limits)
        return limits

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

    def _drain(self, surplus: list[str], pool: Pool) -> None:
        self._remove(surplus)
        self._wait_started(pool)

    def _wait_started(self, pool: Pool, timeout: float = 300.0) -> None:
        """Wait until warm instances being started beyond the pool's target (all, once it is closed)
        are done: those of a closed entry are removed by the worker that started them."""
        deadline = self._monotonic() + timeout
        with self._cond:
            while pool.starting > 0 and (pool.closed or len(pool.ready) + pool.starting > pool.target(
                    self._limits())) and self._monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - self._monotonic())))

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

    # -- the workers -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"sqlrs-warm-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Look at the bounds again now (the configuration changed)."""
        self._cached_limits = None
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the workers and remove every warm instance (the engine is stopping)."""
        self._stop.set()
        with self._cond:
            doomed = [spare for pool in list(self._pools.values()) for spare in self._set.close(pool)]
            doomed += self._doomed
            self._doomed = []
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=120)
        self._threads = []
        self._remove(doomed)
        for thread in list(self._drainers):
            thread.join(timeout=120)

    def recover(self) -> None:
        """Remove warm instances an engine that is gone left behind (they live in its memory only)."""
        with self._cond:
            known = {spare for pool in self._pools.values() for spare in pool.ready}
        for instance in self.repo.list_instances():
            if instance.pooled and instance.id not in known:
                log.info("removing warm instance %s left by a previous engine", instance.id)
                self._remove([instance.id])

    def _prune(self) -> list[str]:
        """Under the lock: forget ready ids whose instance was removed or claimed behind our back."""
        gone: list[str] = []
        for pool in self._pools.values():
            for instance_id in list(pool.ready):
                current = self.repo.get_instance(instance_id)
                if current is None or not current.pooled:
                    pool.ready.remove(instance_id)
                    gone.append(instance_id)
        return gone

    def _remove_later(self, instance_ids: list[str]) -> None:
        if instance_ids:
            with self._cond:
                self._doomed += instance_ids
                self._cond.notify_all()

    def _take(self, limits: WarmLimits) -> tuple[list[str], Pool | None]:
        """Under the lock: the warm instances to remove now, else the state to start one for."""
        doomed = self._set.trim(limits) + self._doomed
        now = self._monotonic()
        if now - self._pruned_at > PRUNE_SECONDS:
            self._pruned_at = now
            doomed += self._prune()
        self._doomed = []
        return doomed, None if doomed else self._set.next_wanted(limits)

    def work_once(self) -> bool:
        """One turn of a worker, in the caller's thread: apply the bounds and remove the surplus,
        or start one wanted warm instance. False when there was nothing to do."""
        limits = self._limits()
        with self._cond:
            doomed, pool = self._take(limits)
        if doomed:
            self._remove(doomed)
        elif pool is not None:
            self._fill(pool)
        return bool(doomed) or pool is not None

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                limits = self._limits()
                with self._cond:
                    doomed, pool = self._take(limits)
                    if pool is None and not doomed:
                        self._cond.wait(1.0)
                        continue
                if doomed:
                    self._remove(doomed)
                    continue
                assert pool is not None
                self._fill(pool)
            except Exception:  # keep the worker alive
                log.exception("warm instance worker")
                time.sleep(1.0)

    def _fill(self, pool: Pool) -> None:
        instance: Instance | None = None
        error: str | None = None
        try:
            state = self.repo.get_state(pool.state_id)
            if state is None:
                raise NotFound(f"state {pool.state_id[:12]} is gone")
            runtime, identity = self.resolve(state, pool.image)
            instance = self.instances.create(state, runtime, identity, pooled=True)
        except SqlrsError as exc:
            error = exc.message
        except Exception as exc:  # keep the worker alive; report on the pool
            log.exception("state %s: cannot start a warm instance", pool.state_id[:12])
            error = f"{type(exc).__name__}: {exc}"
        while True:
            with self._cond:
                if instance is None or not (pool.closed or self._stop.is_set()):
                    pool.starting -= 1
                    if instance is not None:
                        pool.ready.append(instance.id)
                        pool.created += 1
                        pool.failures, pool.error = 0, None
                    elif error is not None:
                        pool.failures += 1
                        pool.error = error
                        pool.retry_at = self._monotonic() + min(MAX_BACKOFF_SECONDS, 2.0 ** pool.failures)
                        if "is gone" in error:
                            self._set.close(pool)
                        log.warning("state %s: cannot start a warm instance: %s", pool.state_id[:12], error)
                    self._cond.notify_all()
                    return
            # the entry was closed while this one started: remove it before counting it done, so a
            # discard that waits for `starting` to reach 0 leaves nothing behind
            self._remove([instance.id])
            instance = None

    def _remove(self, instance_ids: list[str]) -> None:
        for instance_id in instance_ids:
            instance = self.repo.get_instance(instance_id)
            if instance is None or not instance.pooled:
                continue  # claimed meanwhile, or gone
            try:
                self.instances.remove(instance)
            except Exception:
                log.exception("cannot remove warm instance %s", instance_id)
