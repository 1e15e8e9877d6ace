"""The composition root: the one place that wires adapters into services."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sqlrs import extensions
from sqlrs.config_file import ConfigFile
from sqlrs.domain.demand import IdlePolicy
from sqlrs.domain.errors import RuntimeUnavailable, SqlrsError, UsageError
from sqlrs.domain.remote import RemoteRef
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.backup import OnlineBackup
from sqlrs.ports.clock import Clock, SystemClock
from sqlrs.ports.inspector import DatabaseInspector
from sqlrs.ports.processes import ServerMemory
from sqlrs.ports.registry import RegistryOpener, StateLayers, StateRegistry
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime, RuntimeContext, RuntimePlugin
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.ports.tools import LiquibaseLauncher
from sqlrs.services.compare import CompareService
from sqlrs.services.instances.databases import DatabaseInstances
from sqlrs.services.instances.demand import DemandService
from sqlrs.services.instances.footprint import Footprint
from sqlrs.services.instances.identities import Identities
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.instances.lifetime import LifetimeService
from sqlrs.services.instances.pool import PoolService
from sqlrs.services.instances.runtimes import RuntimeRegistry
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.standby import StandbyClones
from sqlrs.services.instances.warm_set import WarmLimits
from sqlrs.services.inventory import Inventory
from sqlrs.services.jobs import JobRunner
from sqlrs.services.layout import Layout
from sqlrs.services.prepare import PrepareService
from sqlrs.services.recovery import Recovery
from sqlrs.services.runs import RunService
from sqlrs.services.states.build import ChainBuilder
from sqlrs.services.states.cache import CacheService, Limits
from sqlrs.services.states.catalog import StateCatalog
from sqlrs.services.states.instance_snapshots import InstanceSnapshots
from sqlrs.services.states.steps import use_liquibase
from sqlrs.services.states.steps.idle_runners import IdleRunners
from sqlrs.services.transfers.pull import StatePuller
from sqlrs.services.transfers.push import StatePusher
from sqlrs.services.transfers.registries import Registries
from sqlrs.services.transfers.remote_cache import RemoteCache

log = logging.getLogger("sqlrs.engine")


@attrs.define
class Services:
    layout: Layout
    config: ConfigFile
    repo: Repository
    store: SnapshotStore
    registry: RuntimeRegistry
    identities: Identities  # what runs a request or a state
    clock: Clock
    servers: ServerInstances  # the servers of every kind of instance, and the standby clones
    instances: Instances  # instances of every kind, as users get them
    jobs: JobRunner
    catalog: StateCatalog  # which states are kept, in use, published, removed
    prepare: PrepareService
    inventory: Inventory
    runs: RunService
    store_note: str
    lifetime: LifetimeService  # idle TTLs (started and stopped by the app's lifespan)
    pool: PoolService  # warm instances and pools (idem)
    cache: CacheService
    databases: DatabaseInstances  # database instances in shared servers (idem)
    demand: DemandService  # sessions and claims: what the two above keep started ahead
    footprint: Footprint  # what all of it costs, for status
    snapshots: InstanceSnapshots  # `sqlrs snapshot`
    pusher: StatePusher  # `sqlrs push`
    puller: StatePuller  # `sqlrs pull`
    recovery: Recovery  # crash recovery, run by `bootstrap` unless told not to
    compare: CompareService  # `sqlrs compare`
    runners: IdleRunners  # host runners kept between builds (stopped by the app's lifespan)
    runtime_settings: dict[str, tuple[str, ...]] = attrs.field(factory=dict)  # see Adapters


def load_runtimes(context: RuntimeContext) -> tuple[dict[str, Callable[[], Runtime]], dict[str, tuple[str, ...]]]:
    """The runtimes registered in the entry point group `sqlrs.runtimes`: name -> factory, highest
    priority first (`auto` order), and name -> the config keys it reads. A plugin that cannot be
    loaded stays listed, last, as a runtime whose probe says why it is unusable."""
    plugins: list[RuntimePlugin] = []
    broken: list[tuple[str, object]] = []
    for name, loaded in extensions.load(extensions.RUNTIMES, RuntimePlugin):
        if isinstance(loaded, RuntimePlugin):
            plugins.append(loaded)
        else:
            log.warning("runtime %s cannot be used: %s: %s", name, type(loaded).__name__, loaded)
            broken.append((name, loaded))
    factories: dict[str, Callable[[], Runtime]] = {
        plugin.name: functools.partial(plugin.make, context) for plugin in sorted(plugins, key=lambda p: -p.priority)}
    for name, problem in broken:
        factories[name] = functools.partial(_unloadable, name, problem)
    return factories, {plugin.name: plugin.settings for plugin in plugins}


def _unloadable(name: str, problem: object) -> Runtime:
    raise RuntimeUnavailable(f"the runtime plugin {name} cannot be loaded: {type(problem).__name__}: {problem}",
                             hint="reinstall the package that registers it, or uninstall it")


@attrs.define
class Adapters:
    """Everything the services need from the outside world; `real_adapters` makes the real ones,
    tests give fakes (tests/fakes.py)."""

    store: SnapshotStore
    repo: Repository
    runtimes: dict[str, Callable[[], Runtime]]  # name -> factory, in `auto` order (an SDK is imported when first used)
    admin: ServerAdmin
    inspector: DatabaseInspector
    backup: OnlineBackup
    clock: Clock
    open_registry: RegistryOpener
    layers: StateLayers
    pid_alive: Callable[[int], bool]  # is a postmaster's pid a live process
    owner_alive: Callable[[int, int], bool]  # is the client process (pid, start time) still there
    kill_leftover_server: Callable[[Path], None]  # stop a server a crash left on a directory
    liquibase: LiquibaseLauncher | None = None
    store_note: str = ""  # shown by status and prepares that copy (e.g. the slow copy backend)
    # runtime name -> the config keys its factory reads: a change of one rebuilds the runtime
    runtime_settings: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    server_memory: ServerMemory | None = None  # what servers use, for status (None: not reported)


def real_adapters(config: ConfigFile, state_dir: Path) -> Adapters:
    """The production adapters: the configured snapshot store, SQLite metadata, psycopg, /proc."""
    from sqlrs import procfs
    from sqlrs.adapters.pgfiles import kill_leftover_server
    from sqlrs.adapters.procmem import ProcServerMemory
    from sqlrs.adapters.psycopg_admin import PsycopgAdmin
    from sqlrs.adapters.psycopg_backup import PsycopgBackup
    from sqlrs.adapters.psycopg_inspector import PsycopgInspector
    from sqlrs.adapters.sqlite.repository import SqliteRepository, create_sqlite_engine, migrate
    from sqlrs.changelogs import liquibase_install
    from sqlrs.entrypoints.engine.store import open_store

    store, note = open_store(config, state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = create_sqlite_engine(state_dir / "metadata.db")
    migrate(engine)

    def open_registry(ref: RemoteRef) -> StateRegistry:
        from sqlrs.adapters.oci.registry import OrasRegistry  # oras and requests: only when a registry is used

        return OrasRegistry(ref, insecure=bool(config.get("cache.remote_insecure")))

    layout = Layout(state_dir=state_dir, store_root=store.root)
    runtimes, runtime_settings = load_runtimes(RuntimeContext(
        state_dir=state_dir, binaries_dir=layout.binaries_dir, labels={"sqlrs.state_dir": str(state_dir)},
        setting=config.get))
    return Adapters(store=store, repo=SqliteRepository(engine), runtimes=runtimes, runtime_settings=runtime_settings,
                    admin=PsycopgAdmin(), inspector=PsycopgInspector(), backup=PsycopgBackup(), clock=SystemClock(),
                    open_registry=open_registry,
                    layers=_LazyLayers(), pid_alive=procfs.pid_alive, owner_alive=procfs.alive,
                    kill_leftover_server=kill_leftover_server, liquibase=liquibase_install,
                    store_note=note, server_memory=ProcServerMemory())


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
    identities = Identities(registry, layout, default_image=lambda: str(config.get("dbms.image")))
    standby = StandbyClones(store, layout)
    servers = ServerInstances(repo, store, layout, registry, admin, clock, standby, pid_alive=adapters.pid_alive)
    jobs = JobRunner(repo, clock, lambda: int(config.get("jobs.history.max")))

    # what is kept started ahead: warm instances and shared servers, following one demand
    def warm_limits() -> WarmLimits:
        return WarmLimits(enabled=bool(config.get("warm.enabled")), per_state=int(config.get("warm.per_state")),
                          max_states=int(config.get("warm.max_states")),
                          max_instances=int(config.get("warm.max_instances")),
                          idle_seconds=int(config.get("warm.idle_seconds")))

    demand = DemandService(repo, clock, lambda: IdlePolicy(states=int(config.get("warm.idle_states")),
                                                           seconds=float(config.get("warm.idle_seconds"))))
    pool = PoolService(repo, servers, identities.of_state, clock, limits=warm_limits,
                       on_claim=lambda instance: lifetime.noticed(instance),  # (made below: it removes instances)
                       monotonic=clock.monotonic, demand=demand)
    databases = DatabaseInstances(repo, servers, admin, clock, spares=lambda: int(config.get("databases.spares")),
                                  host_idle_seconds=lambda: int(config.get("databases.host_idle_seconds")),
                                  burst_spares=lambda: int(config.get("databases.burst_spares")), demand=demand)
    demand.on_change += [pool.wake, databases.wake]
    instances = Instances(servers, databases, pool, identities.of_state)

    def release_hold(state_id: str, holder: str) -> None:  # its owner is gone: a pool hold, or a session
        pool.release(state_id, holder, wait=False)
        demand.end(holder, state_id)

    lifetime = LifetimeService(repo, instances, admin, clock, alive=adapters.owner_alive, release_hold=release_hold)

    # the states: a state that goes takes what was kept ahead for it (warm instances first: their
    # replacements start on its standby clone)
    catalog = StateCatalog(repo, store, layout, jobs, kept_ahead=(pool.discard, demand.forget, standby.discard))

    def cache_limits() -> Limits:
        cap = config.get("cache.capacity.max_bytes")
        reserve = int(config.get("cache.capacity.reserve_bytes"))
        return Limits(0, reserve, default_cap=True) if cap == "auto" else Limits(int(cap), reserve)

    cache = CacheService(catalog, clock, cache_limits)
    said = [False]

    def store_warnings(copies: bool) -> list[str]:
        """The store's note (the slow copy backend) where it matters: a prepare that copies a data
        directory, else the first prepare after the engine starts. `status` always shows it."""
        if not note or (said[0] and not copies):
            return []
        said[0] = True
        return [note]

    registries = Registries(adapters.open_registry, adapters.layers, config.get)
    pusher = StatePusher(catalog, identities, registries)
    puller = StatePuller(catalog, identities, registries, clock, after_pull=cache.after_commit)
    runners = IdleRunners()
    prepare = PrepareService(identities, ChainBuilder(catalog, servers, cache, runners=runners), instances, jobs,
                             clock, remote=RemoteCache(registries, pusher, puller), warnings=store_warnings)
    inventory = Inventory(repo, catalog, instances)
    snapshots = InstanceSnapshots(catalog, instances, adapters.backup, after_commit=cache.enforce)
    recovery = Recovery(catalog, servers, jobs, adapters.kill_leftover_server)
    footprint = Footprint(repo, store, layout, clock, cache.cache_bytes, databases.copies_ready,
                          adapters.server_memory)
    services = Services(layout=layout, config=config, repo=repo, store=store, registry=registry,
                        identities=identities, clock=clock, servers=servers, instances=instances, jobs=jobs,
                        catalog=catalog, prepare=prepare, inventory=inventory, runs=RunService(inventory, instances),
                        store_note=note, cache=cache, lifetime=lifetime, pool=pool, databases=databases, demand=demand,
                        footprint=footprint, snapshots=snapshots, pusher=pusher, puller=puller, recovery=recovery,
                        runners=runners,
                        compare=CompareService(inventory, instances, adapters.inspector),
                        runtime_settings=adapters.runtime_settings)
    if recover:
        recovery.run()
    return services


def reconfigure(services: Services, changes: dict[str, Any]) -> list[str]:
    """Store config changes and apply them now where the engine can; return the keys that wait
    for an engine restart. A runtime that reads a changed key is built anew; one that answered
    before the change and does not with it refuses the change (nothing is stored) and keeps its
    working adapter. (One that did not answer before, e.g. a daemon that is down, is not the
    setting's fault.)"""
    from sqlrs.domain.config import lookup

    config, registry = services.config, services.registry
    before = config.stored()
    affected = [name for name in registry.names() if set(services.runtime_settings.get(name, ())) & set(changes)]
    answered = {name: registry.probe(name).available for name in affected}
    config.update(changes)  # validates every value's type before writing anything
    for name in affected:
        answer = registry.rebuild(name)
        if answer.available or not answered[name]:
            continue
        config.update({key: before.get(key) for key in changes})
        registry.rebuild(name)
        key = next(key for key in changes if key in services.runtime_settings[name])
        raise UsageError(f"runtime {name} does not work with this setting: {answer.reason}",
                         hint=f"{key}: {lookup(key).description}")
    return [key for key in changes if lookup(key).restart]


def check_runtimes(services: Services) -> None:
    """The engine validates its runtimes when it starts (seed §6): every answer goes to the log,
    and what `auto` would skip (a daemon that answers but cannot get the default image) is known
    before the first request."""
    for probe in services.registry.validate(services.identities.image_check(None)):
        log.info("runtime %s: %s%s", probe.name, "available: " if probe.available else "NOT available: ",
                 probe.reason)
    try:
        choice = services.registry.choose(None, services.identities.image_check(None))
        log.info("runtime for new states: %s", choice.reason)
    except SqlrsError as exc:
        log.warning("no runtime can serve prepares: %s", exc.message)


