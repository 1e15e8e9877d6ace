"""The composition root: the one place that wires adapters into services."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sqlrs.adapters.config_file import ConfigFile
from sqlrs.domain.errors import SqlrsError, UsageError
from sqlrs.domain.model import State
from sqlrs.domain.remote import RemoteRef
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.backup import OnlineBackup
from sqlrs.ports.clock import Clock, SystemClock
from sqlrs.ports.registry import RegistryOpener, StateLayers, StateRegistry
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.ports.tools import LiquibaseLauncher
from sqlrs.services.cache import CacheService, Limits
from sqlrs.services.databases import DatabaseInstances
from sqlrs.services.instance_snapshots import InstanceSnapshots
from sqlrs.services.instances import InstanceManager
from sqlrs.services.inventory import Inventory
from sqlrs.services.jobs import JobContext, JobRunner
from sqlrs.services.layout import Layout
from sqlrs.services.lifetime import LifetimeService
from sqlrs.services.locks import StateLocks
from sqlrs.services.pool import PoolService, WarmLimits, resolve_identity
from sqlrs.services.prepare import INITDB_OPTIONS, PrepareService
from sqlrs.services.recovery import Recovery
from sqlrs.services.remote import RemoteService
from sqlrs.services.remote_cache import RemoteCache
from sqlrs.services.runs import RunService
from sqlrs.services.runtimes import RuntimeRegistry
from sqlrs.services.servers import PortAllocator
from sqlrs.services.standby import StandbyClones
from sqlrs.services.steps import use_liquibase

log = logging.getLogger("sqlrs.engine")


@attrs.define
class Services:
    layout: Layout
    config: ConfigFile
    repo: Repository
    store: SnapshotStore
    registry: RuntimeRegistry
    clock: Clock
    instances: InstanceManager
    jobs: JobRunner
    prepare: PrepareService
    inventory: Inventory
    runs: RunService
    store_note: str
    lifetime: LifetimeService  # idle TTLs (started and stopped by the app's lifespan)
    pool: PoolService  # warm instances and pools (idem)
    cache: CacheService
    databases: DatabaseInstances  # database instances in shared servers (idem)
    snapshots: InstanceSnapshots  # `sqlrs snapshot`
    remote: RemoteService  # push, pull, the remote cache of prepare
    recovery: Recovery  # crash recovery, run by `bootstrap` unless told not to


def _runtime_factories(config: ConfigFile, layout: Layout) -> dict[str, Callable[[], Runtime]]:
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


def open_store(config: ConfigFile, layout_state_dir: Path) -> tuple[SnapshotStore, str]:
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


@attrs.define
class Adapters:
    """Everything the services need from the outside world; `real_adapters` makes the real ones,
    tests give fakes (tests/fakes.py)."""

    store: SnapshotStore
    repo: Repository
    runtimes: dict[str, Callable[[], Runtime]]  # name -> factory (an SDK is imported when first used)
    admin: ServerAdmin
    backup: OnlineBackup
    clock: Clock
    open_registry: RegistryOpener
    layers: StateLayers
    pid_alive: Callable[[int], bool]  # is a postmaster's pid a live process
    owner_alive: Callable[[int, int], bool]  # is the client process (pid, start time) still there
    kill_leftover_server: Callable[[Path], None]  # stop a server a crash left on a directory
    liquibase: LiquibaseLauncher | None = None
    store_note: str = ""  # shown by status and prepares that copy (e.g. the slow copy backend)


def real_adapters(config: ConfigFile, state_dir: Path) -> Adapters:
    """The production adapters: the configured snapshot store, SQLite metadata, psycopg, /proc."""
    from sqlrs.adapters import liquibase, procfs
    from sqlrs.adapters.pgfiles import kill_leftover_server
    from sqlrs.adapters.psycopg_admin import PsycopgAdmin
    from sqlrs.adapters.psycopg_backup import PsycopgBackup
    from sqlrs.adapters.sqlite.repository import SqliteRepository, create_sqlite_engine, migrate

    store, note = open_store(config, state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = create_sqlite_engine(state_dir / "metadata.db")
    migrate(engine)

    def open_registry(ref: RemoteRef) -> StateRegistry:
        from sqlrs.adapters.oci.registry import OrasRegistry  # oras and requests: only when a registry is used

        return OrasRegistry(ref, insecure=bool(config.get("cache.remote_insecure")))

    return Adapters(store=store, repo=SqliteRepository(engine),
                    runtimes=_runtime_factories(config, Layout(state_dir=state_dir, store_root=store.root)),
                    admin=PsycopgAdmin(), backup=PsycopgBackup(), clock=SystemClock(), open_registry=open_registry,
                    layers=_LazyLayers(), pid_alive=procfs.pid_alive, owner_alive=procfs.alive,
                    kill_leftover_server=kill_leftover_server, liquibase=liquibase,
                    store_note=note)


class _LazyLayers:
    """The OCI layer format, imported (zstandard) when a state is first pushed or pulled."""

    def write_layer(self, state_dir: Path, parent_dir: Path | None, out: Path) -> tuple[str, int, int]:
        from sqlrs.adapters.oci.layers import write_layer

        return write_layer(state_dir, parent_dir, out)

    def apply_layer(self, blob: Path, target: Path, uid: int | None, gid: int | None) -> int:
        from sqlrs.adapters.oci.layers import apply_layer

        return apply_layer(blob, target, uid, gid)


def bootstrap(state_dir: Path, adapters: Adapters | None = None, *, config: ConfigFile | None = None,
              recover: bool = True) -> Services:
    """Wire the services of the engine of `state_dir` on `adapters` (the real ones by default)
    and, unless told not to, recover from a crash of the previous engine."""
    config = config if config is not None else ConfigFile(state_dir / "config.json")
    adapters = adapters if adapters is not None else real_adapters(config, state_dir)
    store, repo, clock, admin = adapters.store, adapters.repo, adapters.clock, adapters.admin
    note = adapters.store_note
    layout = Layout(state_dir=state_dir, store_root=store.root)
    layout.ensure()
    for path in (layout.state_dir, layout.store_root, layout.run_root, layout.states_dir, layout.instances_dir,
                 layout.scratch_dir):
        # PostgreSQL runs as another user (or container uid) and must traverse to its data dir
        os.chmod(path, 0o711)
    if adapters.liquibase is not None:
        use_liquibase(adapters.liquibase)

    def configured_runtime() -> tuple[str, str]:
        effective = config.effective()["container.runtime"]
        return str(effective["value"]), str(effective["source"])

    registry = RuntimeRegistry(adapters.runtimes, configured_runtime)
    ports = PortAllocator(lambda: [instance.port for instance in repo.list_instances()])
    standby = StandbyClones(store, layout)
    instances = InstanceManager(repo, store, layout, registry, admin, clock, ports, standby,
                                pid_alive=adapters.pid_alive)
    jobs = JobRunner(repo, clock, lambda: int(config.get("jobs.history.max")))
    locks = StateLocks()
    cache = CacheService(repo, store, layout, clock, lambda: Limits(int(config.get("cache.capacity.max_bytes")),
                                                                    int(config.get("cache.capacity.reserve_bytes"))),
                         jobs.active_ids, locks, standby)
    said = [False]

    def store_warnings(copies: bool) -> list[str]:
        """The store's note (the slow copy backend) where it matters: a prepare that copies a data
        directory, else the first prepare after the engine starts. `status` always shows it."""
        if not note or (said[0] and not copies):
            return []
        said[0] = True
        return [note]

    # late binding: prepare (which knows the default image) is made below, with remote in it
    remote = RemoteService(repo, store, layout, registry,
                           identity_for=lambda runtime, image: prepare.identity_for(runtime, image),
                           initdb_options=INITDB_OPTIONS, clock=clock, locks=locks,
                           open_registry=adapters.open_registry, setting=config.get, layers=adapters.layers)
    remote.after_pull = cache.after_commit
    remote_cache = RemoteCache(remote)

    def after_commit(ctx: JobContext, state: State) -> None:
        cache.after_commit(ctx, state)
        remote_cache.after_commit(ctx, state)

    prepare = PrepareService(repo, store, layout, registry, instances, admin, clock,
                             default_image=lambda: str(config.get("dbms.image")), locks=locks,
                             before_build=cache.before_build, after_commit=after_commit, warnings=store_warnings,
                             remote=remote_cache)
    inventory = Inventory(repo, store, layout, instances, jobs.active_ids, locks)
    runs = RunService(repo, inventory, instances, clock)
    lifetime = LifetimeService(repo, instances, admin, clock, alive=adapters.owner_alive)

    def warm_limits() -> WarmLimits:
        return WarmLimits(enabled=bool(config.get("warm.enabled")), per_state=int(config.get("warm.per_state")),
                          max_states=int(config.get("warm.max_states")),
                          max_instances=int(config.get("warm.max_instances")),
                          idle_seconds=int(config.get("warm.idle_seconds")))

    pool = PoolService(
        repo, instances, lambda state, image: resolve_identity(registry, prepare.identity_for, state, image,
                                                              INITDB_OPTIONS),
        clock, limits=warm_limits, on_claim=lifetime.noticed, monotonic=clock.monotonic,
    )
    databases = DatabaseInstances(repo, instances, admin, clock, spares=lambda: int(config.get("databases.spares")),
                                  host_idle_seconds=lambda: int(config.get("databases.host_idle_seconds")),
                                  burst_spares=lambda: int(config.get("databases.burst_spares")))
    instances.databases = databases
    lifetime.release_hold = lambda state_id, holder: pool.release(state_id, holder, wait=False)
    snapshots = InstanceSnapshots(repo, store, layout, instances, admin, adapters.backup, clock, locks,
                                  after_commit=cache.enforce)
    # a hit claims a warm instance; removing or evicting a state removes its warm instances
    instances.warm = pool
    standby.on_discard.append(pool.discard)
    recovery = Recovery(repo, store, layout, registry, jobs, standby, adapters.kill_leftover_server)
    services = Services(layout=layout, config=config, repo=repo, store=store, registry=registry, clock=clock,
                        instances=instances, jobs=jobs, prepare=prepare, inventory=inventory, runs=runs,
                        store_note=note, cache=cache, lifetime=lifetime, pool=pool, databases=databases,
                        snapshots=snapshots, remote=remote, recovery=recovery)
    if recover:
        recovery.run()
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


