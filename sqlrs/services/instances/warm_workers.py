"""The workers behind the warm instances: they start the instances the bounds want, remove the
surplus (bounds lowered, states gone, warm instances found dead) and leave nothing behind.

`PoolService` (pool.py) is what the engine talks to: pools, the automatic warm set and claims;
this base holds the bookkeeping both share (the `WarmSet` under one condition variable) and the
threads that act on it, so a claim only flips bookkeeping and wakes a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlrs.domain.errors import NotFound, SqlrsError
from sqlrs.domain.model import Instance, State
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.demand import DemandService
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.warm_set import Pool, WarmLimits, WarmSet

log = logging.getLogger("sqlrs.pool")

MAX_BACKOFF_SECONDS = 60.0
PRUNE_SECONDS = 10.0  # how often ready warm instances are checked against the metadata
WORKERS = 1
LIMITS_TTL = 1.0  # seconds the warm.* configuration is cached


class WarmWorkers:
    """The warm instances' shared bookkeeping and the worker threads that start and remove them."""

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

    # -- draining (a pool released, a state discarded) ---------------------------------------------
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
