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

from sqlrs.domain.errors import SqlrsError
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

    prepare = PrepareService(repo, store, layout, registry, instances, admin, clock,
                             default_image=lambda: str(config.get("dbms.image")), locks=locks,
                             before_build=cache.before_build, after_commit=cache.after_commit, warnings=warn_once)
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
    # a hit claims a warm instance; removing or evicting a state removes its warm instances
    instances.warm = pool
    standby.on_discard.append(pool.discard)
    services = Services(layout=layout, config=config, repo=repo, store=store, registry=registry, clock=clock,
                        instances=instances, jobs=jobs, prepare=prepare, inventory=inventory, runs=runs,
                        store_note=note, cache=cache, lifetime=lifetime, pool=pool)
    recover(services)
    return services


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


def describe_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SqlrsError):
        return exc.to_json()
    return {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "details": {}}
