"""Warm pools: started instances of a hot state, kept ready so a claim is one fast API call.

A pool is configured per state (`PUT /v1/pools/{state_id}` with a size) and lives in the
engine's memory. Background workers keep `size` spares started (cloned, server up, password
set); `claim` hands one out in milliseconds: it flips the spare's `pooled` flag, gives it its TTL
(and name), and wakes a worker to start a replacement. When no spare is ready but one is being
started, the claim waits for it (that is never slower than starting one itself); when none is
being started either, the caller starts an instance the ordinary way.

Bounds: all pools together hold at most `pool.max_instances` spares; a pool nobody claimed from
or renewed for `pool.idle_seconds` is drained. Holders (e.g. the pytest sessions of one run,
one per xdist worker) renew a pool with PUT and leave it with DELETE ?holder=; when the last
holder leaves, the pool is drained. Spares are real instances marked `pooled`: they show in
listings, and an engine that stops drains its pools (a new one removes spares a crashed engine
left, see `recover`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from sqlrs.domain import keys
from sqlrs.domain.errors import Conflict, NotFound, SqlrsError, UsageError
from sqlrs.domain.model import Instance, InstanceStatus, NameBinding, State
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances import InstanceManager
from sqlrs.services.runtimes import RuntimeRegistry

log = logging.getLogger("sqlrs.pool")

CLAIM_WAIT_SECONDS = 120.0  # a spare being started when the pool ran dry is waited for this long at most
MAX_BACKOFF_SECONDS = 60.0
WORKERS = 1


@attrs.define
class Pool:
    state_id: str
    size: int
    runtime: str
    image: str | None
    holders: set[str] = attrs.field(factory=set)
    ready: list[str] = attrs.field(factory=list)  # spare instance ids, oldest first
    starting: int = 0
    hits: int = 0
    misses: int = 0
    created: int = 0
    last_used: float = attrs.field(factory=time.monotonic)
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    closed: bool = False

    def to_json(self, idle_seconds: float) -> dict[str, Any]:
        return {
            "state_id": self.state_id, "size": self.size, "ready": len(self.ready), "starting": self.starting,
            "runtime": self.runtime, "image": self.image, "holders": len(self.holders), "hits": self.hits,
            "misses": self.misses, "created": self.created, "error": self.error,
            "drains_in_seconds": round(max(0.0, idle_seconds - (time.monotonic() - self.last_used)), 1)
            if idle_seconds > 0 else None,
        }


def resolve_identity(registry: RuntimeRegistry, identity_for: Callable[[Runtime, str | None], RuntimeIdentity],
                     state: State, image: str | None, initdb_options: tuple[str, ...]) -> tuple[Runtime,
                                                                                            RuntimeIdentity]:
    """The runtime and identity that start instances of `state`, checked against its base id."""
    runtime = registry.get(state.runtime)
    identity = identity_for(runtime, image)
    if keys.base_id(identity.identity, initdb_options) != state.base_id:
        raise UsageError(
            f"state {state.id[:12]} was not built by {identity.description}",
            hint="pass the image (and runtime) the state was prepared with",
        )
    return runtime, identity


class PoolService:
    def __init__(
        self,
        repo: Repository,
        instances: InstanceManager,
        resolve: Callable[[State, str | None], tuple[Runtime, RuntimeIdentity]],
        clock: Clock,
        max_instances: Callable[[], int],
        idle_seconds: Callable[[], int],
        on_claim: Callable[[Instance], None] = lambda instance: None,
        workers: int = WORKERS,
    ):
        self.repo = repo
        self.instances = instances
        self.resolve = resolve
        self.clock = clock
        self.max_instances = max_instances
        self.idle_seconds = idle_seconds
        self.on_claim = on_claim
        self._workers = workers
        self._pools: dict[str, Pool] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._drainers: list[threading.Thread] = []  # background drains of released pools

    # -- configuration -----------------------------------------------------------------------------
    def configure(self, state: State, size: int, image: str | None = None, holder: str | None = None) -> dict[str, Any]:
        if size < 0:
            raise UsageError("a pool's size must not be negative")
        limit = int(self.max_instances())
        if limit <= 0:
            raise Conflict("warm pools are disabled (pool.max_instances is 0)",
                           hint="sqlrs config set pool.max_instances 16")
        if size > limit:
            raise UsageError(f"pool size {size} exceeds pool.max_instances ({limit})",
                             hint=f"sqlrs config set pool.max_instances {size}")
        runtime, identity = self.resolve(state, image)
        with self._cond:
            pool = self._pools.get(state.id)
            if pool is None or pool.closed:
                pool = Pool(state_id=state.id, size=size, runtime=runtime.name, image=identity.image)
                self._pools[state.id] = pool
            pool.size = size
            pool.image = identity.image
            pool.last_used = time.monotonic()
            if holder:
                pool.holders.add(holder)
            pool.retry_at = 0.0
            self._cond.notify_all()
            data = pool.to_json(self.idle_seconds())
        if size == 0 and not holder:
            return self.release(state.id, None) or data
        return data

    def release(self, state_id: str, holder: str | None, wait: bool = True) -> dict[str, Any] | None:
        """Remove `holder`; drain the pool when no holder is left (or at once without a holder).

        `wait=False` answers at once and drains in the background (`close` waits for that)."""
        with self._cond:
            pool = self._pools.get(state_id)
            if pool is None:
                return None
            if holder:
                pool.holders.discard(holder)
                if pool.holders:
                    return pool.to_json(self.idle_seconds())
            spares = self._close(pool)
            data = pool.to_json(self.idle_seconds())
        if wait:
            self._drain(spares, pool)
        else:
            drainer = threading.Thread(target=self._drain, args=(spares, pool), name="sqlrs-pool-drain", daemon=True)
            with self._cond:
                self._drainers = [thread for thread in self._drainers if thread.is_alive()] + [drainer]
            drainer.start()
        return data

    def _drain(self, spares: list[str], pool: Pool) -> None:
        self._remove(spares)
        self._wait_started(pool)

    def _wait_started(self, pool: Pool, timeout: float = 300.0) -> None:
        """Wait until spares being started for a drained pool are removed again."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while pool.starting > 0 and time.monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def get(self, state_id: str) -> dict[str, Any]:
        with self._cond:
            pool = self._pools.get(state_id)
            if pool is None:
                raise NotFound(f"no pool for state {state_id[:12]}", hint="list them: GET /v1/pools")
            return pool.to_json(self.idle_seconds())

    def pools(self) -> list[dict[str, Any]]:
        with self._cond:
            return [pool.to_json(self.idle_seconds()) for pool in self._pools.values()]

    def wait_ready(self, state_id: str, count: int, timeout: float) -> dict[str, Any]:
        """Block until the pool has `count` spares ready (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                pool = self._pools.get(state_id)
                if pool is None:
                    raise NotFound(f"no pool for state {state_id[:12]}")
                if len(pool.ready) >= min(count, pool.size) or time.monotonic() >= deadline:
                    return pool.to_json(self.idle_seconds())
                if pool.error and pool.starting == 0 and pool.failures > 2:
                    raise Conflict(f"the pool cannot start instances: {pool.error}")
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    # -- claiming ----------------------------------------------------------------------------------
    def claim(self, state_id: str, ttl_seconds: int, name: str | None = None,
              wait: float = CLAIM_WAIT_SECONDS) -> Instance | None:
        """A ready spare of the state's pool, now an ordinary instance; None when the pool has none."""
        deadline = time.monotonic() + wait
        while True:
            with self._cond:
                pool = self._pools.get(state_id)
                if pool is None or pool.closed:
                    return None
                pool.last_used = time.monotonic()
                while not pool.ready and pool.starting > 0 and not pool.closed and time.monotonic() < deadline:
                    self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                if not pool.ready:
                    pool.misses += 1
                    self._cond.notify_all()
                    return None
                instance_id = pool.ready.pop(0)
                pool.hits += 1
                self._cond.notify_all()  # a worker starts the replacement
            instance = self._hand_out(instance_id, ttl_seconds, name)
            if instance is not None:
                return instance
            # the spare vanished or died: try the next one

    def _hand_out(self, instance_id: str, ttl_seconds: int, name: str | None) -> Instance | None:
        instance = self.repo.get_instance(instance_id)
        if instance is None:
            return None
        if self.instances.live_status(instance) != InstanceStatus.RUNNING:
            log.info("pool spare %s is not running any more; dropping it", instance_id)
            self._remove([instance_id])
            return None
        now = self.clock.now()
        instance.pooled = False
        instance.ttl_seconds = ttl_seconds
        instance.last_used_at = now
        self.repo.update_instance(instance)
        if name:
            self.repo.bind_name(NameBinding(name=name, instance_id=instance.id, created_at=now))
            instance.name = name
        self.on_claim(instance)
        return instance

    # -- the workers -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"sqlrs-pool-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the workers and drain every pool (the engine is stopping)."""
        self._stop.set()
        with self._cond:
            spares = [spare for pool in list(self._pools.values()) for spare in self._close(pool)]
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=120)
        self._threads = []
        self._remove(spares)
        for thread in list(self._drainers):
            thread.join(timeout=120)

    def recover(self) -> None:
        """Remove spares an engine that is gone left behind (pools live in memory only)."""
        for instance in self.repo.list_instances():
            if instance.pooled and not any(instance.id in pool.ready for pool in self._pools.values()):
                log.info("removing pool spare %s left by a previous engine", instance.id)
                self._remove([instance.id])

    def _close(self, pool: Pool) -> list[str]:
        """Under the lock: forget the pool; return its ready spares for removal."""
        pool.closed = True
        spares, pool.ready = pool.ready, []
        if self._pools.get(pool.state_id) is pool:
            del self._pools[pool.state_id]
        self._cond.notify_all()
        return spares

    def _spares(self) -> int:
        return sum(len(pool.ready) + pool.starting for pool in self._pools.values())

    def _next(self) -> Pool | None:
        """Under the lock: the pool that needs a spare most (fewest ready first), counted as starting."""
        now = time.monotonic()
        idle = float(self.idle_seconds())
        drained: list[str] = []
        for pool in list(self._pools.values()):
            if idle > 0 and now - pool.last_used > idle:
                log.info("pool of state %s unused for %.0fs: draining it", pool.state_id[:12], now - pool.last_used)
                drained += self._close(pool)
        if drained:
            threading.Thread(target=self._remove, args=(drained,), daemon=True).start()
        limit = int(self.max_instances())
        if self._spares() >= limit:
            return None
        wanting = [p for p in self._pools.values()
                   if len(p.ready) + p.starting < p.size and p.retry_at <= now and not p.closed]
        if not wanting:
            return None
        pool = min(wanting, key=lambda p: (len(p.ready) + p.starting, p.last_used))
        pool.starting += 1
        return pool

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                pool = self._next()
                if pool is None:
                    self._cond.wait(1.0)
                    continue
            self._fill(pool)

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
            log.exception("pool of state %s: cannot start a spare", pool.state_id[:12])
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
                        pool.retry_at = time.monotonic() + min(MAX_BACKOFF_SECONDS, 2.0 ** pool.failures)
                        if "is gone" in error:
                            self._close(pool)
                        log.warning("pool of state %s: cannot start a spare: %s", pool.state_id[:12], error)
                    self._cond.notify_all()
                    return
            # the pool was drained while this spare started: remove it before counting it done, so a
            # drain that waits for `starting` to reach 0 leaves nothing behind
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
                log.exception("cannot remove pool spare %s", instance_id)
