"""Crash recovery at engine start: make the store and the metadata agree again.

An engine may die anywhere (the fault tests kill it at named crash points). What it leaves is
made invisible or removed here, before the first request: interrupted jobs fail, scratch and
temporary volumes go (with the servers a crash left running on them), a state directory without
its metadata row goes, a state row whose directory is gone is forgotten, an instance directory
nobody knows goes, and containers of this state dir that no instance owns are removed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlrs.ports.housekeeping import ContainerHousekeeping
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.jobs import JobRunner
from sqlrs.services.states.catalog import StateCatalog

log = logging.getLogger("sqlrs.engine")


class Recovery:
    def __init__(self, catalog: StateCatalog, servers: ServerInstances, jobs: JobRunner,
                 kill_leftover_server: Callable[[Path], None]):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = catalog.store
        self.layout = catalog.layout
        self.registry = servers.registry
        self.jobs = jobs
        self.standby = servers.standby
        # stops a (native) server a crashed engine left running on a directory about to go
        self.kill_leftover_server = kill_leftover_server

    def run(self) -> None:
        """Make the store and metadata agree after a crash: nothing half-made stays visible."""
        layout, repo, store = self.layout, self.repo, self.store
        self.jobs.recover()
        known_instances = {instance.id for instance in repo.list_instances()}
        if self.standby is not None:
            self.standby.clear_leftovers()
        leftovers = [*layout.tmp_dir.iterdir(), *layout.scratch_dir.iterdir()]
        orphans = [directory for directory in layout.instances_dir.iterdir() if directory.name not in known_instances]
        self.remove_leftover_containers(everywhere=bool(leftovers or orphans))
        for leftover in leftovers:
            log.info("removing leftover %s", leftover)
            self.kill_leftover_server(leftover)
            store.delete(leftover)
            shutil.rmtree(layout.run_dir(leftover.name), ignore_errors=True)
        self.catalog.reconcile()
        for directory in orphans:
            log.info("removing orphan instance directory %s", directory)
            self.kill_leftover_server(directory)
            store.delete(directory)
            shutil.rmtree(layout.run_dir(directory.name), ignore_errors=True)

    def remove_leftover_containers(self, everywhere: bool) -> None:
        """Remove this state dir's containers that no instance owns, after an engine crash.

        They are scratch servers of interrupted builds, one-shot initdb/inspect containers and
        servers of instances that were never recorded (or removed while the daemon was down).
        Containers of known instances stay: they are re-adopted. A runtime's SDK is imported and
        its daemon asked only when `everywhere` (scratch or orphan directories were left over:
        any runtime may have made them) or when the metadata names that runtime; an unreachable
        daemon is skipped (its containers are removed by a later start).
        """
        repo, registry = self.repo, self.registry
        instances = repo.list_instances()
        used = {instance.runtime for instance in instances} | {state.runtime for state in repo.list_states()}
        owned = {instance.runtime_ref for instance in instances if instance.runtime_ref}
        labels: dict[str, str | None] = {"sqlrs.state_dir": str(self.layout.state_dir)}
        for name in registry.names():
            if not (everywhere or name in used):
                continue
            try:
                runtime = registry.get(name)
            except Exception as exc:  # a runtime that cannot even be built made nothing to remove
                log.info("not checking %s for leftovers: %s", name, exc)
                continue
            if not isinstance(runtime, ContainerHousekeeping):
                continue
            probe = registry.probe(name)
            if not probe.available:
                log.info("not checking %s for leftover containers: %s", name, probe.reason)
                continue
            try:
                for ref in runtime.leftovers(labels):
                    if ref not in owned:
                        log.info("removing leftover %s container %s", name, ref[:12])
                        runtime.remove_container(ref)
            except Exception as exc:  # never keep the engine from starting
                log.warning("cannot remove leftover %s containers: %s", name, exc)
