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

Owners: an instance or a pool hold may belong to a client process (pid + start time, see
sqlrs.procfs; the pytest plugin and the library name themselves, the CLI does not).
Every tick the owners are looked up in /proc; once an owner is gone (it exited, was killed, an
xdist worker crashed) its instances are removed and its pool holds released, within a few
seconds rather than after the TTL. Holds live in memory like the pools; owned instances are in
the metadata, so a restarted engine still removes them.
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
from sqlrs.ports.repository import InstanceRepository
from sqlrs.services.instances.kinds import Instances

log = logging.getLogger("sqlrs.lifetime")

TICK_SECONDS = 1.0
MAX_PROBE_INTERVAL = 5.0


def probe_interval(ttl_seconds: int) -> float:
    return min(max(ttl_seconds / 4, TICK_SECONDS), MAX_PROBE_INTERVAL)


class LifetimeService:
    def __init__(self, repo: InstanceRepository, instances: Instances, admin: ServerAdmin, clock: Clock,
                 tick: float = TICK_SECONDS, *, alive: Callable[[int, int], bool],
                 release_hold: Callable[[str, str], object] = lambda state_id, holder: None):
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
        self.alive = alive  # (pid, start time) -> is that process still there
        self._holds: dict[tuple[str, str], tuple[int, int]] = {}  # (state id, holder) -> owner
        self._owned = 0
        # leaves a pool (or ends a session) as a holder whose owner is gone (bootstrap: PoolService.release,
        # not waiting, and DemandService.end)
        self.release_hold = release_hold

    # -- what the API asks -----------------------------------------------------------------------
    def touch(self, instance_id: str) -> None:
        """An engine request used the instance: its idle clock starts again."""
        with self._lock:
            self._last_active[instance_id] = self.clock.now()

    def pending(self) -> bool:
        """True while instances with a TTL or an owner, or owned pool holds exist: the engine must
        stay up to remove them."""
        with self._lock:
            if self._with_ttl > 0 or self._owned > 0 or self._holds:
                return True
        # not counted yet (created since the last tick, e.g. by a prepare job): ask the metadata
        return any((i.ttl_seconds > 0 or i.owner_pid is not None) and not i.pooled for i in self.repo.list_instances())

    # -- owners ------------------------------------------------------------------------------------
    def _visible(self, owner: tuple[int, int] | None) -> tuple[int, int] | None:
        # an owner this engine cannot see now (another pid namespace, a container) would look gone
        # at the next check: ignore it, the TTL still applies
        if owner is not None and not self.alive(*owner):
            log.info("owner pid %s is not visible to the engine; ignoring it", owner[0])
            return None
        return owner

    def adopt(self, instance: Instance, owner: tuple[int, int] | None) -> Instance:
        """Record the process `instance` belongs to (None: nobody's; it outlives its creator)."""
        owner = self._visible(owner)
        instance.owner_pid, instance.owner_started = owner if owner is not None else (None, None)
        current = self.repo.get_instance(instance.id)
        if current is not None:
            current.owner_pid, current.owner_started = instance.owner_pid, instance.owner_started
            self.repo.update_instance(current)
        if owner is not None:
            with self._lock:
                self._owned = max(self._owned, 1)
        return instance

    def hold(self, state_id: str, holder: str, owner: tuple[int, int]) -> None:
        """`holder` (a pool hold) belongs to process `owner`: released when it is gone."""
        if self._visible(owner) is None:
            return
        with self._lock:
            self._holds[(state_id, holder)] = owner

    def unhold(self, state_id: str, holder: str | None) -> None:
        """The hold was released (every hold of the pool when `holder` is None)."""
        with self._lock:
            for key in [k for k in self._holds if k[0] == state_id and (holder is None or k[1] == holder)]:
                del self._holds[key]

    def check_owners(self, instances: list[Instance] | None = None) -> list[str]:
        """Remove the instances and release the pool holds whose owner process is gone. Returns the
        removed instance ids."""
        verdicts: dict[tuple[int, int], bool] = {}

        def gone(owner: tuple[int, int]) -> bool:
            if owner not in verdicts:
                verdicts[owner] = not self.alive(*owner)
            return verdicts[owner]

        with self._lock:
            holds = list(self._holds.items())
        for (state_id, holder), owner in holds:
            if gone(owner):
                log.info("pool of state %s: holder %s (pid %s) is gone; releasing its hold", state_id[:12], holder,
                         owner[0])
                with self._lock:
                    self._holds.pop((state_id, holder), None)
                self.release_hold(state_id, holder)
        owned = [i for i in (self.repo.list_instances() if instances is None else instances)
                 if i.owner_pid is not None and i.owner_started is not None and not i.pooled]
        with self._lock:
            self._owned = len(owned)
        removed = []
        for instance in owned:
            if self._stop.is_set():
                break
            assert instance.owner_pid is not None and instance.owner_started is not None
            if not gone((instance.owner_pid, instance.owner_started)):
                continue
            current = self.repo.get_instance(instance.id)
            if current is None or current.owner_pid != instance.owner_pid:
                continue  # removed or kept (disowned) meanwhile
            log.info("instance %s: its owner (pid %s) is gone; removing it", current.id, current.owner_pid)
            self.instances.remove(current)
            self.on_expired(current)
            self._forget(current.id)
            removed.append(current.id)
        return removed

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
        """One pass: remove what a gone owner left, probe what is due, remove what expired. Returns
        the removed instance ids."""
        listed = self.repo.list_instances()
        removed = self.check_owners(listed)
        now = self.clock.now()
        candidates = [i for i in listed if i.ttl_seconds > 0 and not i.pooled and i.id not in removed]
        known = {i.id for i in candidates}
        with self._lock:
            self._with_ttl = len(candidates)
            for gone in set(self._last_active) - known:
                self._last_active.pop(gone, None)
                self._probed_at.pop(gone, None)
                self._connections.pop(gone, None)
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
        self._forget(current.id)
        return True

    def _forget(self, instance_id: str) -> None:
        with self._lock:
            self._last_active.pop(instance_id, None)
            self._probed_at.pop(instance_id, None)
            self._connections.pop(instance_id, None)
