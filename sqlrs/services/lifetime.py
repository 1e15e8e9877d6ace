"""Instance lifetime: an idle TTL per instance, enforced by a background thread.

An instance with `ttl_seconds > 0` is stopped and removed once it has gone `ttl_seconds` without
being used. Used means: a client connected to it (a client backend in the server's
`pg_stat_activity`, read over the instance's Unix socket through the engine's admin connection;
the probe itself and other engine sessions do not count), or an engine request on it (claim, run,
TTL change). So an idle instance expires, a connected one stays however long the session lasts.

Probing: every instance with a TTL is probed at most every `min(max(ttl / 4, 1), 5)` seconds. A
client that connects and disconnects between two probes is not seen (its run through
`sqlrs run:*` is, as an engine request). Just before removing an instance it is probed once
more.

Activity is kept in memory. A new engine (after `sqlrs engine stop` or a crash) starts each
instance's idle clock at the later of its `last_used_at` and the engine's start, so a restart
never expires an instance early; it may give one a longer life. The engine does not exit on its
idle timeout while instances with a TTL exist (see `pending`): someone must remove them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import Repository
from sqlrs.services.instances import InstanceManager

log = logging.getLogger("sqlrs.lifetime")

TICK_SECONDS = 1.0
MAX_PROBE_INTERVAL = 5.0


def probe_interval(ttl_seconds: int) -> float:
    return min(max(ttl_seconds / 4, TICK_SECONDS), MAX_PROBE_INTERVAL)


class LifetimeService:
    def __init__(self, repo: Repository, instances: InstanceManager, admin: ServerAdmin, clock: Clock,
                 tick: float = TICK_SECONDS):
        self.repo = repo
        self.instances = instances
        self.admin = admin
        self.clock = clock
        self.tick = tick
        self.started_at = clock.now()
        self._lock = threading.Lock()
        self._last_active: dict[str, datetime] = {}
        self._connections: dict[str, int] = {}
        self._probed_at: dict[str, datetime] = {}
        self._with_ttl = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_expired: Callable[[Instance], None] = lambda instance: None

    # -- what the API asks -----------------------------------------------------------------------
    def touch(self, instance_id: str) -> None:
        """An engine request used the instance: its idle clock starts again."""
        with self._lock:
            self._last_active[instance_id] = self.clock.now()

    def pending(self) -> bool:
        """True while instances with a TTL exist: the engine must stay up to remove them."""
        with self._lock:
            if self._with_ttl > 0:
                return True
        # not counted yet (created since the last tick, e.g. by a prepare job): ask the metadata
        return any(i.ttl_seconds > 0 and not i.pooled for i in self.repo.list_instances())

    def noticed(self, instance: Instance) -> None:
        """A new instance with a TTL exists (before the next tick counts it)."""
        if instance.ttl_seconds > 0 and not instance.pooled:
            with self._lock:
                self._last_active[instance.id] = self.clock.now()
                self._with_ttl = max(self._with_ttl, 1)

    def describe(self, instance_id: str, ttl_seconds: int, pooled: bool,
                 last_used_at: datetime | None = None) -> dict[str, Any]:
        """The lifetime fields of an instance's JSON."""
        if ttl_seconds <= 0 or pooled:
            return {"ttl_seconds": ttl_seconds, "expires_in_seconds": None,
                    "connections": self._connections.get(instance_id)}
        now = self.clock.now()
        with self._lock:
            last = self._last_active.get(instance_id) or self._baseline(last_used_at or now)
            connections = self._connections.get(instance_id)
        remaining = float(ttl_seconds) if connections else (last + timedelta(seconds=ttl_seconds) - now).total_seconds()
        return {"ttl_seconds": ttl_seconds, "expires_in_seconds": round(max(0.0, remaining), 1),
                "connections": connections}

    def _baseline(self, last_used_at: datetime) -> datetime:
        return max(last_used_at, self.started_at)

    # -- the background task -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="sqlrs-lifetime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.check()
            except Exception:  # never let the thread die: the next tick tries again
                log.exception("lifetime check failed")

    def check(self) -> list[str]:
        """One pass: probe what is due, remove what expired. Returns the removed instance ids."""
        now = self.clock.now()
        candidates = [i for i in self.repo.list_instances() if i.ttl_seconds > 0 and not i.pooled]
        known = {i.id for i in candidates}
        with self._lock:
            self._with_ttl = len(candidates)
            for gone in set(self._last_active) - known:
                self._last_active.pop(gone, None)
                self._probed_at.pop(gone, None)
                self._connections.pop(gone, None)
        removed = []
        for instance in candidates:
            if self._stop.is_set():
                break
            with self._lock:
                last = self._last_active.setdefault(instance.id, self._baseline(instance.last_used_at))
                last = max(last, instance.last_used_at)  # runs and restarts record their use there
                self._last_active[instance.id] = last
                probed = self._probed_at.get(instance.id)
            due = probed is None or (now - probed).total_seconds() >= probe_interval(instance.ttl_seconds)
            expired = (now - last).total_seconds() >= instance.ttl_seconds
            if not due and not expired:
                continue
            connections = self._probe(instance)
            if connections > 0:
                self.touch(instance.id)
                continue
            if expired and self._expire(instance):
                removed.append(instance.id)
        return removed

    def _probe(self, instance: Instance) -> int:
        count = 0
        if self.instances.live_status(instance) == InstanceStatus.RUNNING:
            try:
                count = self.admin.client_connections(
                    Path(instance.run_path), instance.port, timeout=2.0,
                    database=instance.dbname if instance.kind == InstanceKind.DATABASE else None)
            except Exception as exc:  # a server that does not answer has no usable connection
                log.info("instance %s: cannot count its connections: %s", instance.id, exc)
        with self._lock:
            self._connections[instance.id] = count
            self._probed_at[instance.id] = self.clock.now()
        return count

    def _expire(self, instance: Instance) -> bool:
        current = self.repo.get_instance(instance.id)
        if current is None or current.pooled or current.ttl_seconds <= 0:
            return False
        with self._lock:
            last = self._last_active.get(instance.id, current.last_used_at)
        if (self.clock.now() - max(last, current.last_used_at)).total_seconds() < current.ttl_seconds:
            return False  # touched meanwhile
        log.info("instance %s: no client for %ss (its TTL); removing it", current.id, current.ttl_seconds)
        self.instances.remove(current)
        self.on_expired(current)
        with self._lock:
            self._last_active.pop(current.id, None)
            self._probed_at.pop(current.id, None)
            self._connections.pop(current.id, None)
        return True
