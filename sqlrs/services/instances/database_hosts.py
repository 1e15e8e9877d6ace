"""The shared servers behind database instances: one *host* per state (an instance of kind `host`,
never handed out), with the template database every database instance is copied from.

`DatabaseInstances` (databases.py) hands the databases out and keeps copies ahead; this base
starts, follows and stops the hosts and holds the bookkeeping both share.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlrs.domain.errors import UsageError
from sqlrs.domain.model import Instance, InstanceKind, State
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.demand import DemandService
from sqlrs.services.instances.server_instances import ServerInstances

log = logging.getLogger("sqlrs.databases")

TEMPLATE_DB = "sqlrs_template"  # the host's copy of the state's `postgres` database; nobody connects to it
PREFIX = "sqlrs_"  # database instances and copies made ahead: sqlrs_<instance id>


def database_name(instance_id: str) -> str:
    return f"{PREFIX}{instance_id}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class DatabaseHosts:
    """The states' shared servers and their template databases (see the module docstring)."""

    def __init__(self, repo: StatesAndInstances, instances: ServerInstances, admin: ServerAdmin, clock: Clock,
                 spares: Callable[[], int], host_idle_seconds: Callable[[], int],
                 burst_spares: Callable[[], int] = lambda: 16, demand: DemandService | None = None):
        self.demand = demand
        self.repo = repo
        self.instances = instances
        self.admin = admin
        self.clock = clock
        self.spares = spares
        self.burst_spares = burst_spares
        self.host_idle_seconds = host_idle_seconds
        self._claims: dict[str, deque[float]] = {}  # host id -> when its recent claims came (clock.monotonic)
        self._copier: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._state_locks: dict[str, threading.Lock] = {}
        self._ready: dict[str, list[str]] = {}  # host id -> instance ids whose databases exist already
        self._making: dict[str, int] = {}  # host id -> copies being made
        self._idle_since: dict[str, float] = {}
        self._handing: dict[str, int] = {}  # host id -> database instances being handed out of it now
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hosts -------------------------------------------------------------------------------------
    def _state_lock(self, state_id: str) -> threading.Lock:
        with self._lock:
            return self._state_locks.setdefault(state_id, threading.Lock())

    def host_of(self, state_id: str) -> Instance | None:
        hosts = [i for i in self.repo.list_instances(state_id) if i.kind == InstanceKind.HOST]
        return hosts[0] if hosts else None

    @contextlib.contextmanager
    def _handing_out(self, state: State, runtime: Runtime, identity: RuntimeIdentity) -> Iterator[Instance]:
        """The state's shared server for the block, which hands out a database instance of it: the
        idle check (`_stop_unused`, under the same state lock) leaves a host alone while a hand-out
        is under way, so a database is never handed out of a server that is being stopped."""
        with self._state_lock(state.id):
            host = self._host(state, runtime, identity)
            with self._lock:
                self._handing[host.id] = self._handing.get(host.id, 0) + 1
        try:
            yield host
        finally:
            with self._lock:
                left = self._handing.pop(host.id) - 1
                if left:
                    self._handing[host.id] = left

    def _stop_unused(self, host: Instance, why: str) -> bool:
        """Stop the host unless a database instance of it is held or being handed out; whether it stopped."""
        with self._state_lock(host.state_id):
            with self._lock:
                handing = host.id in self._handing
            if handing or self._databases_of(host.id):
                return False
            log.info("host %s of state %s: %s; stopping it", host.id, host.state_id[:12], why)
            self.remove_host(host)
            return True

    def _host(self, state: State, runtime: Runtime, identity: RuntimeIdentity) -> Instance:
        """The state's shared server, started (and its template made) when it has none. The caller
        holds the state's lock."""
        host = self.host_of(state.id)
        if host is not None:
            running = self.instances.ensure_running(host)
            if running.port != host.port or running.runtime_ref != host.runtime_ref:
                self._follow(running)
            return running
        host = self.instances.create(state, runtime, identity, kind=InstanceKind.HOST)
        try:
            run_dir, port = Path(host.run_path), host.port
            others = self.admin.query(run_dir, port, "SELECT datname FROM pg_database WHERE datname NOT IN "
                                                     "('postgres', 'template0', 'template1') ORDER BY 1")
            if others:
                names = ", ".join(str(row[0]) for row in others)
                raise UsageError(
                    f"state {state.id[:12]} holds databases besides postgres ({names}): a database "
                    "instance copies only postgres",
                    hint="use a server instance (kind server) for this state")
            self.admin.execute(run_dir, port, [f"CREATE DATABASE {TEMPLATE_DB} TEMPLATE postgres"],
                               dbname="template1")
        except BaseException:
            self.instances.remove(host)
            raise
        log.info("state %s: shared server %s on port %d for database instances", state.id[:12], host.id,
                 host.port)
        return host

    def _follow(self, host: Instance) -> None:
        """The host was restarted (maybe on another port): its database instances follow it."""
        for instance in self._databases_of(host.id):
            instance.port, instance.runtime_ref, instance.status = host.port, host.runtime_ref, host.status
            self.repo.update_instance(instance)

    def _databases_of(self, host_id: str) -> list[Instance]:
        return [i for i in self.repo.list_instances() if i.kind == InstanceKind.DATABASE and i.host_id == host_id]

    def _copy(self, host: Instance, instance_id: str) -> None:
        self.admin.execute(Path(host.run_path), host.port,
                           [f"CREATE DATABASE {_quote(database_name(instance_id))} TEMPLATE {TEMPLATE_DB}"])

    def _drop(self, host: Instance, dbname: str) -> None:
        self.admin.execute(Path(host.run_path), host.port, [f"DROP DATABASE IF EXISTS {_quote(dbname)} WITH (FORCE)"])

    def remove_host(self, host: Instance) -> None:
        """Stop a host with every database instance it holds (its state goes, or it idled)."""
        for instance in self._databases_of(host.id):
            self.repo.delete_instance(instance.id)  # their databases go with the host's data directory
        with self._lock:
            self._ready.pop(host.id, None)
            self._idle_since.pop(host.id, None)
            self._claims.pop(host.id, None)
        self.instances.remove(host)
