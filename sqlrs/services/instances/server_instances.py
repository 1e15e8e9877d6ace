"""Server instances: clone a state, start a server on it, hand out a DSN; restart and remove.

The servers of every kind of instance are made here: a server instance of its own, a warm one
made ahead (`pooled`, services/instances/pool.py), a state's shared server for database instances
(kind `host`, services/instances/databases.py). Which kind a request gets, and a warm instance
claimed first, is services/instances/kinds.py's."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlrs.domain.errors import NotFound, RuntimeFailure
from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus, NameBinding, State
from sqlrs.domain.passwords import new_password, scram_verifier
from sqlrs.domain.roles import ENGINE_ROLE
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.housekeeping import ContainerHousekeeping
from sqlrs.ports.postmaster import pg_major, read_postmaster_pid
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.instances.runtimes import RuntimeRegistry
from sqlrs.services.instances.servers import PortAllocator, Server
from sqlrs.services.instances.standby import StandbyClones
from sqlrs.services.layout import Layout

INSTANCE_USER = ENGINE_ROLE  # the role clients log in as (sqlrs.domain.roles)
INSTANCE_DB = "postgres"
log = logging.getLogger("sqlrs.engine")


def new_instance_id() -> str:
    return secrets.token_hex(6)


def _drop_stale_pidfile(data_dir: Path, pid_alive: Callable[[int], bool]) -> None:
    """Remove the postmaster.pid of a killed server whose process is gone.

    It still says `ready`: readiness of the new server (read from that file, with a one-second
    resolution start time) could be taken from it when both started within the same second.
    PostgreSQL itself would discard the file, as its pid is dead. Container servers record a pid
    of their own namespace; their adapter clears the file before starting a container.
    """
    info = read_postmaster_pid(data_dir)
    if info is not None and info[0] > 1 and not pid_alive(info[0]):
        (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _port_clash(error: RuntimeFailure) -> bool:
    log = str(error.details.get("log", ""))
    return "could not bind" in log or "Address already in use" in log or "port is already allocated" in log


class ServerInstances:
    def __init__(
        self,
        repo: StatesAndInstances,
        store: SnapshotStore,
        layout: Layout,
        registry: RuntimeRegistry,
        admin: ServerAdmin,
        clock: Clock,
        standby: StandbyClones | None = None,
        *,
        pid_alive: Callable[[int], bool],
    ):
        self.pid_alive = pid_alive  # is a postmaster's pid a live process (a zombie is not)
        self.standby = standby
        self.repo = repo
        self.store = store
        self.layout = layout
        self.registry = registry
        self.admin = admin
        self.clock = clock
        self.ports = PortAllocator(lambda: [instance.port for instance in repo.list_instances()])
        # a lock lives while someone holds or waits for it: one per instance ever made would pile up
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
        self._locks_guard = threading.Lock()

    def _lock(self, instance_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    # -- servers -----------------------------------------------------------------------------
    def start_server(self, runtime: Runtime, identity: RuntimeIdentity, key: str, rel: str,
                     preferred_port: int | None = None, settings: Mapping[str, str] | None = None) -> Server:
        """Start a server on the volume `rel`, retrying on another port when one is taken;
        `settings` add to (or override) the servers' common settings."""
        for attempt in range(3):
            port = self.ports.allocate(preferred_port if attempt == 0 else None)
            server = Server.create(runtime, identity, key, self.layout.abs(rel), self.layout.run_dir(key), port,
                                   settings=settings)
            try:
                server.start()
                return server
            except RuntimeFailure as exc:
                if not _port_clash(exc) or attempt == 2:
                    raise
            finally:
                # from here on the listening server itself keeps the port from being handed out
                self.ports.release(port)
        raise AssertionError("unreachable")

    def server_of(self, instance: Instance) -> Server:
        runtime = self.registry.get(instance.runtime)
        identity = runtime.resolve(instance.image, pg_major(self.layout.abs(instance.data_path)))
        return self._server(runtime, identity, instance)

    def _server(self, runtime: Runtime, identity: RuntimeIdentity, instance: Instance) -> Server:
        key = instance.host_id or instance.id  # a database instance is served by its host's server
        return Server.create(
            runtime, identity, key, self.layout.abs(instance.data_path), self.layout.run_dir(key),
            instance.port, instance.runtime_ref,
        )

    def _handle(self, instance: Instance) -> Server:
        """The instance's server for asking, stopping and releasing it: no image lookup.

        Neither needs the runtime identity, so they work (and stay fast) even when the image
        is gone or was never inspected by this engine.
        """
        runtime = self.registry.get(instance.runtime)
        unresolved = RuntimeIdentity(runtime=instance.runtime, identity="", version="", description="",
                                     image=instance.image)
        return self._server(runtime, unresolved, instance)

    def _release(self, instance: Instance) -> None:
        """Kill and release every server of the instance (its data is about to go)."""
        server = self._handle(instance)
        refs = [server.ref] if server.ref else []
        if isinstance(server.runtime, ContainerHousekeeping):  # container runtimes: by label too
            refs += [ref for ref in server.runtime.leftovers({"sqlrs.instance": instance.id}) if ref not in refs]
        for ref in refs:
            server.runtime.discard(server.spec, ref)

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, state: State, runtime: Runtime, identity: RuntimeIdentity, *, name: str | None = None,
               ephemeral: bool = False, job_id: str | None = None, ttl_seconds: int = 0, pooled: bool = False,
               kind: InstanceKind = InstanceKind.SERVER, on_copy: Callable[[], object] | None = None) -> Instance:
        """A server on a clone of `state` (its standby clone when there is one), started now.
        `pooled`: a warm instance made ahead. `kind` HOST: a state's shared server for database
        instances. `on_copy` is called before the state's data directory is cloned by the store."""
        instance_id = new_instance_id()
        rel = self.layout.instance_rel(instance_id)
        target = self.layout.abs(rel)
        source = self.layout.abs(state.data_path)
        if self.standby is None or not self.standby.take(state.id, target):
            if on_copy is not None:
                on_copy()
            self.store.clone(source, target)
        server: Server | None = None
        try:
            server = self.start_server(runtime, identity, instance_id, rel)
            password = new_password()
            self.admin.set_password(server.spec.run_dir, server.spec.port, INSTANCE_USER, scram_verifier(password))
            now = self.clock.now()
            instance = Instance(
                id=instance_id, state_id=state.id, runtime=runtime.name, runtime_ref=server.ref,
                image=identity.image, host="127.0.0.1", port=server.spec.port, user=INSTANCE_USER,
                password=password, dbname=INSTANCE_DB, data_path=rel, run_path=str(server.spec.run_dir),
                status=InstanceStatus.RUNNING, created_at=now, last_used_at=now, ephemeral=ephemeral,
                job_id=job_id, ttl_seconds=ttl_seconds, pooled=pooled, kind=kind,
            )
            self.repo.add_instance(instance)
            if name:
                self.repo.bind_name(NameBinding(name=name, instance_id=instance_id, created_at=now))
                instance.name = name
            if not pooled:  # a warm instance made ahead is no use of its state yet
                self.repo.touch_state(state.id, now, hit=False)
            if self.standby is not None:
                self.standby.refill(state.id, source)  # for the next instance of this state
            return instance
        except BaseException:
            if server is not None:
                server.discard()
            self.store.delete(target)
            shutil.rmtree(self.layout.run_dir(instance_id), ignore_errors=True)
            raise

    def live_status(self, instance: Instance) -> InstanceStatus:
        """What the instance really is now: running, or missing when its server vanished."""
        try:
            running = self._handle(instance).running()
        except Exception:  # the runtime is unreachable (daemon down)
            return InstanceStatus.MISSING
        if running:
            return InstanceStatus.RUNNING
        if instance.status == InstanceStatus.FAILED or not self.layout.abs(instance.data_path).is_dir():
            return InstanceStatus.FAILED  # nothing to restart from
        return InstanceStatus.MISSING

    def ensure_running(self, instance: Instance) -> Instance:
        """Restart a server (or host) instance whose server vanished but whose data directory exists."""
        with self._lock(instance.id):
            current = self.repo.get_instance(instance.id)
            if current is None:
                raise NotFound(f"instance {instance.id} was removed")
            server = self._handle(current)
            if server.running():
                return current
            if not server.spec.data_dir.exists():
                current.status = InstanceStatus.FAILED
                self.repo.update_instance(current)
                raise RuntimeFailure(
                    f"instance {current.id}: its data directory is gone",
                    hint=f"remove it (sqlrs rm {current.id}) and prepare a new one",
                )
            log.info("instance %s: its %s server vanished; restarting it on its data directory",
                     current.id, current.runtime)
            identity = server.runtime.resolve(current.image, pg_major(server.spec.data_dir))
            server.discard()  # a dead container still holds the name
            _drop_stale_pidfile(server.spec.data_dir, self.pid_alive)
            restarted = self.start_server(server.runtime, identity, current.id, current.data_path,
                                          preferred_port=current.port)
            current.runtime_ref = restarted.ref
            current.port = restarted.spec.port
            current.status = InstanceStatus.RUNNING
            current.last_used_at = self.clock.now()
            self.repo.update_instance(current)
            return current

    def remove(self, instance: Instance) -> None:
        """Stop the server, delete its data and run directories, forget it. Idempotent."""
        with self._lock(instance.id):
            try:
                self._release(instance)
            except Exception as exc:
                # the runtime may be gone (daemon stopped): data and metadata still go; a container
                # left behind is removed by the next engine start (services/recovery.py)
                log.warning("instance %s: cannot release its %s server: %s", instance.id, instance.runtime, exc)
            self.store.delete(self.layout.abs(instance.data_path))
            shutil.rmtree(self.layout.run_dir(instance.id), ignore_errors=True)
            self.repo.delete_instance(instance.id)
