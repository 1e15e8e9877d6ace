"""The composition root: the one place that wires adapters into services."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sqlrs.domain.errors import SqlrsError, UsageError
from sqlrs.ports.clock import Clock, SystemClock
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.cache import CacheService, Limits
from sqlrs.services.instances import InstanceManager
from sqlrs.services.inventory import Inventory
from sqlrs.services.jobs import JobRunner
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.prepare import PrepareService
from sqlrs.services.runs import RunService
from sqlrs.services.runtimes import RuntimeRegistry
from sqlrs.services.servers import PortAllocator
from sqlrs.services.standby import StandbyClones

log = logging.getLogger("sqlrs.engine")


@attrs.define
class Services:
    layout: Layout
    config: Any  # ConfigFile
    repo: Repository
    store: SnapshotStore
    registry: RuntimeRegistry
    clock: Clock
    instances: InstanceManager
    jobs: JobRunner
    prepare: PrepareService
    inventory: Inventory
    runs: RunService
    store_note: str = ""
    lifetime: Any = None  # LifetimeService: idle TTLs (started and stopped by the app's lifespan)
    pool: Any = None  # PoolService: warm instances and pools (idem)
    cache: Any = None  # CacheService
    databases: Any = None  # DatabaseInstances: database instances in shared servers (idem)
    snapshots: Any = None  # InstanceSnapshots: `sqlrs snapshot`
    remote: Any = None  # RemoteService: push, pull, the remote cache of prepare


def _runtime_factories(config: Any, layout: Layout) -> dict[str, Callable[[], Runtime]]:
    def native() -> Runtime:
        from sqlrs.adapters.native import NativeRuntime

        return NativeRuntime(
            pg_bin=config.get("runtime.native.pg_bin") or None,
            user=config.get("runtime.native.user"),
            binaries_cache=layout.binaries_dir,
        )

    labels = {"sqlrs.state_dir": str(layout.state_dir)}

    def docker() -> Runtime:
        from sqlrs.adapters.containers.docker import DockerRuntime

        return DockerRuntime(labels=labels, default_image=str(config.get("dbms.image")))

    def podman() -> Runtime:
        from sqlrs.adapters.containers.podman import PodmanRuntime

        return PodmanRuntime(labels=labels, default_image=str(config.get("dbms.image")))

    return {"docker": docker, "podman": podman, "native": native}


def open_store(config: Any, layout_state_dir: Path) -> tuple[SnapshotStore, str]:
    from sqlrs.adapters.snapshots import select_backend

    store_root = Path(config.get("store.path") or layout_state_dir / "store")
    image = config.get("store.volume.image")
    if image:
        from sqlrs.adapters.snapshots.loopvolume import ensure_mounted

        ensure_mounted(Path(image), store_root, config.get("store.volume.fs") or "btrfs")
    store_root.mkdir(parents=True, exist_ok=True)
    requested = config.get("snapshot.backend")
    store, passed_over = select_backend(store_root, requested)
    note = ""
    if store.backend == "copy":
        why = ("because snapshot.backend is set to copy" if requested == "copy" else
               f"because {store_root} has no copy-on-write support ({'; '.join(passed_over)})")
        note = ("SLOW SNAPSHOTS: the snapshot backend is 'copy' " + why + ": every instance and every "
                "build step copies the whole data directory (seconds per GB, no disk shared between "
                "instances). Fix: `sqlrs init local --snapshot btrfs` (or --snapshot reflink) as root")
    return store, note


def bootstrap(state_dir: Path) -> Services:
    from sqlrs.adapters.config_file import ConfigFile
    from sqlrs.adapters.psycopg_admin import PsycopgAdmin
    from sqlrs.adapters.sqlite.repository import SqliteRepository, create_sqlite_engine, migrate

    config = ConfigFile(state_dir / "config.json")
    store, note = open_store(config, state_dir)
    layout = Layout(state_dir=state_dir, store_root=store.root)
    layout.ensure()
    for path in (layout.state_dir, layout.store_root, layout.run_root, layout.states_dir, layout.instances_dir,
                 layout.scratch_dir):
        # PostgreSQL runs as another user (or container uid) and must traverse to its data dir
        os.chmod(path, 0o711)
    engine = create_sqlite_engine(layout.metadata_db)
    migrate(engine)
    repo = SqliteRepository(engine)
    clock = SystemClock()

    def configured_runtime() -> tuple[str, str]:
        effective = config.effective()["container.runtime"]
        return str(effective["value"]), str(effective["source"])

    registry = RuntimeRegistry(_runtime_factories(config, layout), configured_runtime)
    admin = PsycopgAdmin()
    ports = PortAllocator(lambda: [instance.port for instance in repo.list_instances()])
    standby = StandbyClones(store, layout)
    instances = InstanceManager(repo, store, layout, registry, admin, clock, ports, standby)
    jobs = JobRunner(repo, clock, lambda: int(config.get("jobs.history.max")))
    locks = StateLocks()
    cache = CacheService(repo, store, layout, clock, lambda: Limits(int(config.get("cache.capacity.max_bytes")),
                                                                    int(config.get("cache.capacity.reserve_bytes"))),
                         jobs.active_ids, locks, standby)
    pending_warnings = [note] if note else []

    def warn_once() -> list[str]:  # shown by the first prepare after the engine starts
        taken = pending_warnings[:]
        pending_warnings.clear()
        return taken

    # late binding: prepare (which knows the default image) is made below, with remote in it
    remote = _remote_service(config, repo, store, layout, registry, clock, locks,
                             lambda runtime, image: prepare.identity_for(runtime, image))
    remote.after_pull = cache.after_commit

    def after_commit(ctx: Any, state: Any) -> None:
        cache.after_commit(ctx, state)
        remote.after_commit(ctx, state)

    prepare = PrepareService(repo, store, layout, registry, instances, admin, clock,
                             default_image=lambda: str(config.get("dbms.image")), locks=locks,
                             before_build=cache.before_build, after_commit=after_commit, warnings=warn_once,
                             remote=remote)
    inventory = Inventory(repo, store, layout, instances, jobs.active_ids, locks)
    runs = RunService(repo, inventory, instances, clock)
    from sqlrs.services.lifetime import LifetimeService
    from sqlrs.services.pool import PoolService, WarmLimits, resolve_identity
    from sqlrs.services.prepare import INITDB_OPTIONS

    lifetime = LifetimeService(repo, instances, admin, clock)

    def warm_limits() -> WarmLimits:
        return WarmLimits(enabled=bool(config.get("warm.enabled")), per_state=int(config.get("warm.per_state")),
                          max_states=int(config.get("warm.max_states")),
                          max_instances=int(config.get("warm.max_instances")),
                          idle_seconds=int(config.get("warm.idle_seconds")))

    pool = PoolService(
        repo, instances, lambda state, image: resolve_identity(registry, prepare.identity_for, state, image,
                                                              INITDB_OPTIONS),
        clock, limits=warm_limits, on_claim=lifetime.noticed,
    )
    from sqlrs.adapters.psycopg_backup import PsycopgBackup
    from sqlrs.services.databases import DatabaseInstances
    from sqlrs.services.instance_snapshots import InstanceSnapshots

    databases = DatabaseInstances(repo, instances, admin, clock, spares=lambda: int(config.get("databases.spares")),
                                  host_idle_seconds=lambda: int(config.get("databases.host_idle_seconds")))
    instances.databases = databases
    lifetime.release_hold = lambda state_id, holder: pool.release(state_id, holder, wait=False)
    snapshots = InstanceSnapshots(repo, store, layout, instances, admin, PsycopgBackup(), clock, locks,
                                  after_commit=cache.enforce)
    # a hit claims a warm instance; removing or evicting a state removes its warm instances
    instances.warm = pool
    standby.on_discard.append(pool.discard)
    services = Services(layout=layout, config=config, repo=repo, store=store, registry=registry, clock=clock,
                        instances=instances, jobs=jobs, prepare=prepare, inventory=inventory, runs=runs,
                        store_note=note, cache=cache, lifetime=lifetime, pool=pool, databases=databases,
                        snapshots=snapshots, remote=remote)
    recover(services)
    return services


def reconfigure(services: Services, changes: dict[str, Any]) -> list[str]:
    """Store config changes and apply them now where the engine can; return the keys that wait
    for an engine restart. A runtime setting is checked first: a runtime that does not work with
    it refuses the change (nothing is stored) and keeps its working adapter."""
    from sqlrs.domain.config import lookup

    config, registry = services.config, services.registry
    before = config.stored()
    config.update(changes)  # validates every value's type before writing anything
    affected = sorted({name for key in changes for name in lookup(key).runtimes})
    for name in affected:
        answer = registry.rebuild(name)
        if answer.available or name != "native":
            continue  # a container runtime whose daemon is down is not the setting's fault
        config.update({key: before.get(key) for key in changes})
        registry.rebuild(name)
        raise UsageError(f"runtime native does not work with this setting: {answer.reason}",
                         hint="give a directory holding postgres, initdb, psql and pgbench "
                              "(e.g. /usr/lib/postgresql/15/bin), embedded:16 / embedded:18, or unset it")
    return [key for key in changes if lookup(key).restart]


def check_runtimes(services: Services) -> None:
    """The engine validates its runtimes when it starts (seed §6): every answer goes to the log,
    and what `auto` would skip (a daemon that answers but cannot get the default image) is known
    before the first request."""
    for probe in services.registry.validate(services.prepare.image_check(None)):
        log.info("runtime %s: %s%s", probe.name, "available: " if probe.available else "NOT available: ",
                 probe.reason)
    try:
        choice = services.registry.choose(None, services.prepare.image_check(None))
        log.info("runtime for new states: %s", choice.reason)
    except SqlrsError as exc:
        log.warning("no runtime can serve prepares: %s", exc.message)


def _remote_service(config: Any, repo: Repository, store: SnapshotStore, layout: Layout,
                    registry: RuntimeRegistry, clock: Clock, locks: StateLocks,
                    identity_for: Callable[[Runtime, str | None], Any]) -> Any:
    """The remote cache (OCI registry); oras and requests are imported when a registry is used."""
    from sqlrs.services.prepare import INITDB_OPTIONS
    from sqlrs.services.remote import RemoteService

    def open_registry(ref: Any) -> Any:
        from sqlrs.adapters.oci.registry import OrasRegistry

        return OrasRegistry(ref, insecure=bool(config.get("cache.remote_insecure")))

    return RemoteService(repo, store, layout, registry, identity_for=identity_for, initdb_options=INITDB_OPTIONS,
                         clock=clock, locks=locks, open_registry=open_registry, setting=config.get)


def _kill_leftover_native(data_dir: Path) -> None:
    """Stop a server a crashed engine left on a scratch directory (native runtime only)."""
    from sqlrs.adapters.pgfiles import pid_alive, read_postmaster_pid

    info = read_postmaster_pid(data_dir)
    if info is None or not pid_alive(info[0]):
        return
    try:
        with open(f"/proc/{info[0]}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return
    # a container's postmaster.pid holds a pid of its own namespace: act only on our own servers
    if str(data_dir).encode() not in cmdline:
        return
    try:
        os.kill(info[0], signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while pid_alive(info[0]) and time.monotonic() < deadline:
        time.sleep(0.05)


CONTAINER_RUNTIMES = ("docker", "podman")


def _remove_leftover_containers(services: Services, everywhere: bool) -> None:
    """Remove this state dir's containers that no instance owns, after an engine crash.

    They are scratch servers of interrupted builds, one-shot initdb/inspect containers and
    servers of instances that were never recorded (or removed while the daemon was down).
    Containers of known instances stay: they are re-adopted. A runtime's SDK is imported and its
    daemon asked only when `everywhere` (scratch or orphan directories were left over: any
    runtime may have made them) or when the metadata names that runtime; an unreachable daemon
    is skipped (its containers are removed by a later start).
    """
    repo, registry = services.repo, services.registry
    instances = repo.list_instances()
    used = {instance.runtime for instance in instances} | {state.runtime for state in repo.list_states()}
    owned = {instance.runtime_ref for instance in instances if instance.runtime_ref}
    labels = {"sqlrs.state_dir": str(services.layout.state_dir)}
    for name in CONTAINER_RUNTIMES:
        if name not in registry.names() or not (everywhere or name in used):
            continue
        probe = registry.probe(name)
        if not probe.available:
            log.info("not checking %s for leftover containers: %s", name, probe.reason)
            continue
        runtime: Any = registry.get(name)
        try:
            for ref in runtime.leftovers(labels):
                if ref not in owned:
                    log.info("removing leftover %s container %s", name, ref[:12])
                    runtime.remove_container(ref)
        except Exception as exc:  # never keep the engine from starting
            log.warning("cannot remove leftover %s containers: %s", name, exc)


def recover(services: Services) -> None:
    """Make the store and metadata agree after a crash: nothing half-made stays visible."""
    layout, repo, store = services.layout, services.repo, services.store
    services.jobs.recover()
    known_instances = {instance.id for instance in repo.list_instances()}
    if services.instances.standby is not None:
        services.instances.standby.clear_leftovers()
    leftovers = [*layout.tmp_dir.iterdir(), *layout.scratch_dir.iterdir()]
    orphans = [directory for directory in layout.instances_dir.iterdir() if directory.name not in known_instances]
    _remove_leftover_containers(services, everywhere=bool(leftovers or orphans))
    for leftover in leftovers:
        log.info("removing leftover %s", leftover)
        _kill_leftover_native(leftover)
        store.delete(leftover)
        shutil.rmtree(layout.run_dir(leftover.name), ignore_errors=True)
    known = {state.id: state for state in repo.list_states()}
    for directory in layout.states_dir.iterdir():
        if directory.name not in known:
            log.info("removing uncommitted state directory %s", directory)
            store.delete(directory)
    for state in known.values():
        if not layout.abs(state.data_path).is_dir():
            log.warning("state %s lost its data directory; forgetting it", state.id)
            repo.delete_state(state.id)
    for directory in orphans:
        log.info("removing orphan instance directory %s", directory)
        _kill_leftover_native(directory)
        store.delete(directory)
        shutil.rmtree(layout.run_dir(directory.name), ignore_errors=True)
