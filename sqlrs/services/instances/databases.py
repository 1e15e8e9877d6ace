"""Database instances: a database of its own in a shared, per-state server (template copies).

A server instance is a PostgreSQL server of its own on a clone of the state: server-level
isolation, and a cost that is flat in the state's size on copy-on-write stores — but a full copy
of the data directory on the `copy` store. There the fastest known hand-out is what template-copy
tools do (pytest-postgresql, IntegreSQL): `CREATE DATABASE ... TEMPLATE` inside a server that
already runs. A *database instance* is that: the state gets one shared server (its *host*, an
instance of kind `host` that is never handed out), and each database instance is a database in
it, copied from the host's template database, with a few copies made ahead so a claim is a rename
away from an ordinary `CREATE DATABASE`.

Isolation is database-level, stated plainly: database instances of one state share a server, its
roles, settings and a password; each has its own database (its DSN names it). Only the state's
`postgres` database is copied: a state that holds other databases (e.g. one made by `CREATE
DATABASE` in a script) is refused with a hint to use server instances.

Copies ahead follow demand (`sqlrs.domain.demand`, shared with the warm instances): while a
state is busy (a session holds it, or its databases were claimed in the last seconds) the target
rises from `databases.spares` to the number claimed in the last few minutes, or in the state's
previous burst once a session holds it again (a suite's next run), up to `databases.burst_spares`,
and copies are made two at a time. Once the burst or session is over, only the few most recently
used states keep a host, with `databases.spares` copies; the others' copies go and their hosts
stop (a superseded state's too: one an edited migration replaced).

Lifetime: a database instance obeys the same TTL and removal rules as a server instance; removing
it drops its database. A host with no database instances is stopped when its state is neither busy
nor idle-kept (see above), or after `databases.host_idle_seconds` at most, and goes with its state
(`rm`, eviction). Copies made ahead live only in the host: the engine drops those it does not know
when it starts (`recover`), so a crash leaves nothing behind once the engine is back.

The hosts themselves (starting one with its template, following a restart, stopping it) are in
`database_hosts.py`; this module hands the databases out and keeps the copies ahead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlrs.domain.demand import BUSY, Level, Need, recent
from sqlrs.domain.errors import NotFound, RuntimeFailure
from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus, NameBinding, State
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.database_hosts import PREFIX, TEMPLATE_DB, DatabaseHosts, database_name
from sqlrs.services.instances.server_instances import new_instance_id

log = logging.getLogger("sqlrs.databases")

CHECK_SECONDS = 2.0
# claims in this window count as demand for copies ahead: long enough to span a test run and the
# next one a developer starts, short enough that a burst's copies do not hold disk for long
DEMAND_WINDOW_SECONDS = 300.0
COPIERS = 2  # copies made at once: CREATE DATABASE is mostly I/O, and a host has cores to spare


class DatabaseInstances(DatabaseHosts):
    """Database instances handed out from the hosts, and the copies made ahead for them."""

    # -- database instances ---------------------------------------------------------------------
    def create(self, state: State, runtime: Runtime, identity: RuntimeIdentity, *, name: str | None = None,
               ttl_seconds: int = 0, job_id: str | None = None, ephemeral: bool = False,
               spares: bool = True) -> Instance:
        return self.hand_out(state, runtime, identity, name=name, ttl_seconds=ttl_seconds, job_id=job_id,
                             ephemeral=ephemeral, spares=spares)[0]

    def hand_out(self, state: State, runtime: Runtime, identity: RuntimeIdentity, *, name: str | None = None,
                 ttl_seconds: int = 0, job_id: str | None = None,
                 ephemeral: bool = False, spares: bool = True) -> tuple[Instance, bool]:
        """A database instance, and whether its database was copied ahead (else copied now).
        `spares` False: a one-off instance; it takes a copy made ahead if one is ready, and asks
        for no copies to follow."""
        if spares and self.demand is not None:
            self.demand.claimed(state.id)  # before the host is looked up: a busy state's host stays
        with self._handing_out(state, runtime, identity) as host:
            with self._lock:
                ready = self._ready.setdefault(host.id, [])
                instance_id = ready.pop(0) if ready else None
            if spares:
                self.note_claim(host.id)  # wakes the loop to make the next copies ahead
            made_ahead = instance_id is not None
            if instance_id is None:
                instance_id = new_instance_id()
                self._copy(host, instance_id)
            now = self.clock.now()
            instance = Instance(
                id=instance_id, state_id=state.id, runtime=host.runtime, runtime_ref=host.runtime_ref,
                image=host.image, host=host.host, port=host.port, user=host.user, password=host.password,
                dbname=database_name(instance_id), data_path=host.data_path, run_path=host.run_path,
                status=InstanceStatus.RUNNING, created_at=now, last_used_at=now, ephemeral=ephemeral,
                job_id=job_id, ttl_seconds=ttl_seconds, kind=InstanceKind.DATABASE, host_id=host.id,
            )
            try:
                self.repo.add_instance(instance)
                if name:
                    self.repo.bind_name(NameBinding(name=name, instance_id=instance_id, created_at=now))
                    instance.name = name
            except BaseException:
                self._drop(host, database_name(instance_id))
                raise
        self.repo.touch_state(state.id, now, hit=False)
        with self._lock:
            self._idle_since.pop(host.id, None)
        return instance, made_ahead

    def remove(self, instance: Instance) -> None:
        """Drop the instance's database and forget it (its host stays for the next ones)."""
        host = self.repo.get_instance(instance.host_id or "")
        if host is not None and self.instances.live_status(host) == InstanceStatus.RUNNING:
            try:
                self._drop(host, instance.dbname)
            except RuntimeFailure as exc:  # the host is going away anyway, or will be re-adopted
                log.warning("instance %s: cannot drop its database: %s", instance.id, exc.message)
        self.repo.delete_instance(instance.id)
        if host is not None:
            with self._lock:
                self._idle_since.setdefault(host.id, time.monotonic())

    def ensure_running(self, instance: Instance) -> Instance:
        """A database instance runs when its host does: restart the host, follow its port."""
        host = self.repo.get_instance(instance.host_id or "")
        if host is None:
            raise NotFound(f"instance {instance.id}: its shared server is gone",
                           hint=f"remove it (sqlrs rm {instance.id}) and prepare a new one")
        running = self.instances.ensure_running(host)
        if running.port != instance.port or running.runtime_ref != instance.runtime_ref:
            self._follow(running)
        current = self.repo.get_instance(instance.id)
        if current is None:
            raise NotFound(f"instance {instance.id} was removed")
        return current

    # -- background: copies ahead, idle hosts --------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._copier = ThreadPoolExecutor(max_workers=COPIERS, thread_name_prefix="sqlrs-db-copy")
            self._thread = threading.Thread(target=self._loop, name="sqlrs-databases", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look at the hosts now (demand changed: a session began or ended)."""
        with self._lock:
            self._wake.notify_all()

    def pending(self) -> bool:
        """True while shared servers run: the engine stays up to stop them once they idle."""
        return any(i.kind == InstanceKind.HOST for i in self.repo.list_instances())

    def close(self) -> None:
        """Stop the background work; copies made ahead are dropped, and shared servers that hold
        no database instance are stopped (they are cheap to start again; the others stay, like
        every instance, and a new engine re-adopts them)."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self._copier is not None:
            self._copier.shutdown(wait=True, cancel_futures=True)  # a copy in flight lands in _ready
            self._copier = None
        with self._lock:
            ready, self._ready = self._ready, {}
            self._making.clear()
        for host_id, instance_ids in ready.items():
            host = self.repo.get_instance(host_id)
            for instance_id in instance_ids:
                if host is not None:
                    try:
                        self._drop(host, database_name(instance_id))
                    except Exception as exc:  # the next start drops it
                        log.info("cannot drop copy %s: %s", instance_id, exc)
        for host in [i for i in self.repo.list_instances() if i.kind == InstanceKind.HOST]:
            if not self._databases_of(host.id):
                try:
                    self.remove_host(host)
                except Exception as exc:  # the next start looks again
                    log.warning("cannot stop shared server %s: %s", host.id, exc)

    def recover(self) -> None:
        """Drop databases in hosts that no database instance owns (copies made ahead by an engine
        that is gone, or half-made ones) and hosts whose state is gone."""
        known = {i.dbname for i in self.repo.list_instances() if i.kind == InstanceKind.DATABASE}
        for host in [i for i in self.repo.list_instances() if i.kind == InstanceKind.HOST]:
            if self.repo.get_state(host.state_id) is None:
                self.remove_host(host)
                continue
            if self.instances.live_status(host) != InstanceStatus.RUNNING:
                continue
            try:
                rows = self.admin.query(Path(host.run_path), host.port,
                                        f"SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%' "
                                        f"AND datname <> '{TEMPLATE_DB}'")
                for (dbname,) in rows:
                    if dbname not in known:
                        log.info("host %s: dropping leftover database %s", host.id, dbname)
                        self._drop(host, str(dbname))
            except RuntimeFailure as exc:
                log.warning("host %s: cannot check its databases: %s", host.id, exc.message)

    def copies_ready(self) -> int:
        """Copies made ahead in all hosts."""
        with self._lock:
            return sum(len(ids) for ids in self._ready.values())

    def hosts(self) -> list[dict[str, object]]:
        """For `status`: each shared server, what it holds and has ready."""
        with self._lock:
            ready = {host_id: len(ids) for host_id, ids in self._ready.items()}
        return [{"id": host.id, "state_id": host.state_id, "port": host.port, "runtime": host.runtime,
                 "databases": len(self._databases_of(host.id)), "ready": ready.get(host.id, 0),
                 "level": self._need(host).level.value}
                for host in self.repo.list_instances() if host.kind == InstanceKind.HOST]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # keep going: the next tick tries again
                log.exception("database instances: background check failed")
            with self._lock:
                self._wake.wait(CHECK_SECONDS)

    def _tick(self) -> None:
        idle_limit = float(self.host_idle_seconds())
        for host in [i for i in self.repo.list_instances() if i.kind == InstanceKind.HOST]:
            if self._stop.is_set():
                return
            if self._databases_of(host.id):
                with self._lock:
                    self._idle_since.pop(host.id, None)
            else:
                with self._lock:
                    since = self._idle_since.setdefault(host.id, time.monotonic())
                idle_for = time.monotonic() - since
                if self._need(host).level is Level.NONE and self._stop_unused(
                        host, "no database instance, and its state is neither in use nor one of the recently "
                              "used ones"):
                    continue
                if idle_limit >= 0 and idle_for >= idle_limit and self._stop_unused(
                        host, f"no database instance for {idle_for:.0f}s"):
                    continue
            self._refill(host)

    def note_claim(self, host_id: str) -> None:
        """A database instance of the host was handed out: demand for copies ahead."""
        with self._lock:
            self._claims.setdefault(host_id, deque()).append(self.clock.monotonic())
            self._wake.notify_all()

    def _need(self, host: Instance) -> Need:
        return self.demand.need(host.state_id) if self.demand is not None else BUSY

    def wanted(self, host: Instance) -> int:
        """Copies to keep ahead for the host. While its state is busy: the configured floor, raised
        to the claims of the last DEMAND_WINDOW_SECONDS or of the state's previous burst when a
        session holds it (capped by databases.burst_spares); the floor when it is idle; none when
        its state is neither."""
        floor = max(0, int(self.spares()))
        need = self._need(host)
        if need.level is Level.NONE:
            return 0
        if need.level is Level.IDLE:
            return floor
        cap = max(floor, int(self.burst_spares()))
        with self._lock:
            claimed = recent(self._claims.setdefault(host.id, deque()), self.clock.monotonic(), DEMAND_WINDOW_SECONDS)
        return min(cap, max(floor, claimed, need.expected))

    def _refill(self, host: Instance) -> None:
        """Start the copies the host lacks (COPIERS at a time), or drop those beyond its target."""
        wanted = self.wanted(host)
        with self._lock:
            ready = self._ready.setdefault(host.id, [])
            surplus = [ready.pop() for _ in range(max(0, len(ready) - wanted))]
            missing = wanted - len(ready) - self._making.get(host.id, 0)
            copier = self._copier
            if copier is None or self._stop.is_set():
                missing = 0
            self._making[host.id] = self._making.get(host.id, 0) + max(0, missing)
        if surplus:
            log.info("host %s: demand fell to %d; dropping %d copies made ahead", host.id, wanted, len(surplus))
        for instance_id in surplus:  # demand fell: give the disk back
            try:
                self._drop(host, database_name(instance_id))
            except RuntimeFailure as exc:  # the next start drops it
                log.info("host %s: cannot drop copy %s: %s", host.id, instance_id, exc.message)
        for _ in range(max(0, missing)):
            assert copier is not None
            copier.submit(self._copy_ahead, host)

    def _copy_ahead(self, host: Instance) -> None:
        instance_id = new_instance_id()
        made = False
        try:
            if not self._stop.is_set() and self.instances.live_status(host) == InstanceStatus.RUNNING:
                self._copy(host, instance_id)
                made = True
        except Exception as exc:
            log.info("host %s: cannot make a copy ahead: %s", host.id, exc)
        with self._lock:
            self._making[host.id] = max(0, self._making.get(host.id, 0) - 1)
            if made and host.id in self._ready:  # (remove_host forgets the host: its data dir goes)
                self._ready[host.id].append(instance_id)
                self._wake.notify_all()
