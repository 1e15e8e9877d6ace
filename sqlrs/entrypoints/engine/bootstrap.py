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
from sqlrs.services.instances import InstanceManager
from sqlrs.services.inventory import Inventory
from sqlrs.services.jobs import JobRunner
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.prepare import PrepareService
from sqlrs.services.runs import RunService
from sqlrs.services.runtimes import RuntimeRegistry
from sqlrs.services.servers import PortAllocator

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
    from sqlrs.adapters.snapshots import open_store as open_snapshot_store

    store_root = Path(config.get("store.path") or layout_state_dir / "store")
    image = config.get("store.volume.image")
    if image:
        from sqlrs.adapters.snapshots.loopvolume import ensure_mounted

        ensure_mounted(Path(image), store_root, config.get("store.volume.fs") or "btrfs")
    store_root.mkdir(parents=True, exist_ok=True)
    store = open_snapshot_store(store_root, config.get("snapshot.backend"))
    note = ""
    if store.backend == "copy":
        note = ("snapshot backend is 'copy': every clone copies the whole data directory; "
                "use `sqlrs init local --snapshot btrfs` (or reflink) for instant clones")
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
    instances = InstanceManager(repo, store, layout, registry, admin, clock, ports)
    jobs = JobRunner(repo, clock, lambda: int(config.get("jobs.history.max")))
    locks = StateLocks()
    prepare = PrepareService(repo, store, layout, registry, instances, admin, clock,
                             default_image=lambda: str(config.get("dbms.image")), locks=locks)
    inventory = Inventory(repo, store, layout, instances, jobs.active_ids, locks)
    runs = RunService(repo, inventory, instances, clock)
    services = Services(layout=layout, config=config, repo=repo, store=store, registry=registry, clock=clock,
                        instances=instances, jobs=jobs, prepare=prepare, inventory=inventory, runs=runs,
                        store_note=note)
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


def recover(services: Services) -> None:
    """Make the store and metadata agree after a crash: nothing half-made stays visible."""
    layout, repo, store = services.layout, services.repo, services.store
    services.jobs.recover()
    for leftover in [*layout.tmp_dir.iterdir(), *layout.scratch_dir.iterdir()]:
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
    known_instances = {instance.id for instance in repo.list_instances()}
    for directory in layout.instances_dir.iterdir():
        if directory.name not in known_instances:
            log.info("removing orphan instance directory %s", directory)
            _kill_leftover_native(directory)
            store.delete(directory)
            shutil.rmtree(layout.run_dir(directory.name), ignore_errors=True)


def describe_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SqlrsError):
        return exc.to_json()
    return {"code": "internal", "message": f"{type(exc).__name__}: {exc}", "details": {}}
