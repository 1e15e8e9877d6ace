"""What the engine costs the machine right now, for `sqlrs status`: servers up (warm, shared,
the user's), their memory, database copies made ahead, and the disk of states, instances and
shared servers.

Disk: the real allocated bytes (`SnapshotStore.allocated_bytes`). On copy-on-write stores a
clone shares its state's extents, so what instances and shared servers add is measured as the
bytes of the states together with them minus the states alone; on the copy store they share
nothing and are measured alone. Walking every data directory takes a while (tens of ms per
directory), so the disk figures are remembered for DISK_TTL seconds and refreshed in the
background once older (`status` answers with the last figures and their age); the caller waits
only for a first measurement, or when the last one is older than DISK_MAX_AGE.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlrs.domain.model import Instance, InstanceKind
from sqlrs.ports.clock import Clock
from sqlrs.ports.processes import ServerMemory, ServerRef
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.layout import Layout

log = logging.getLogger("sqlrs.engine")

DISK_TTL = 10.0
DISK_MAX_AGE = 60.0


class Footprint:
    def __init__(self, repo: StatesAndInstances, store: SnapshotStore, layout: Layout, clock: Clock,
                 states_bytes: Callable[[], int], copies_ready: Callable[[], int],
                 memory: ServerMemory | None = None):
        self.repo = repo
        self.store = store
        self.layout = layout
        self.clock = clock
        self.states_bytes = states_bytes  # the cache's measure (remembered while the states stay the same)
        self.copies_ready = copies_ready
        self.memory = memory
        self._lock = threading.Lock()
        self._disk: tuple[float, dict[str, int]] | None = None
        self._refreshing: threading.Thread | None = None

    def report(self) -> dict[str, Any]:
        instances = self.repo.list_instances()
        warm = [i for i in instances if i.kind == InstanceKind.SERVER and i.pooled]
        user = [i for i in instances if i.kind == InstanceKind.SERVER and not i.pooled]
        shared = [i for i in instances if i.kind == InstanceKind.HOST]
        servers = warm + user + shared
        memory: dict[str, Any] | None = None
        if self.memory is not None:
            try:
                use = self.memory.memory([ServerRef(i.runtime, i.runtime_ref) for i in servers])
                memory = {"processes": use.processes, "rss_bytes": use.rss_bytes, "pss_bytes": use.pss_bytes}
            except Exception as exc:  # /proc unreadable: the rest of the report still holds
                log.info("cannot read the servers' memory: %s", exc)
        return {
            "servers": {"warm": len(warm), "shared": len(shared), "user": len(user), "total": len(servers)},
            "memory": memory,
            "database_instances": sum(1 for i in instances if i.kind == InstanceKind.DATABASE),
            "copies_ready": self.copies_ready(),
            "disk": self._disk_figures(warm + user, shared),
        }

    def _disk_figures(self, own: list[Instance], shared: list[Instance]) -> dict[str, Any] | None:
        now = self.clock.monotonic()
        with self._lock:
            remembered = self._disk
            if remembered is not None and now - remembered[0] >= DISK_MAX_AGE:
                remembered = None
            if remembered is not None and now - remembered[0] >= DISK_TTL and self._refreshing is None:
                self._refreshing = threading.Thread(target=self._refresh, args=(own, shared),
                                                    name="sqlrs-footprint", daemon=True)
                self._refreshing.start()
        if remembered is None:
            try:
                remembered = self._measure(own, shared)
            except OSError as exc:  # a data directory this engine may not read: no figures rather than none
                log.info("cannot measure the disk footprint: %s", exc)
                return None
        taken, figures = remembered
        return {**figures, "measured_seconds_ago": round(max(0.0, self.clock.monotonic() - taken), 1)}

    def _refresh(self, own: list[Instance], shared: list[Instance]) -> None:
        try:
            self._measure(own, shared)
        except Exception:
            log.exception("cannot measure the disk footprint")
        finally:
            with self._lock:
                self._refreshing = None

    def _measure(self, own: list[Instance], shared: list[Instance]) -> tuple[float, dict[str, int]]:
        states = [self.layout.abs(s.data_path) for s in self.repo.list_states()]
        standby = list(self.layout.standby_dir.iterdir()) if self.layout.standby_dir.is_dir() else []
        own_paths = [self.layout.abs(i.data_path) for i in own] + standby
        shared_paths = [self.layout.abs(i.data_path) for i in shared]
        states_bytes = self.states_bytes()
        instances_bytes = self._added(states, own_paths, states_bytes)
        shared_bytes = self._added(states, shared_paths, states_bytes)
        figures = {"states_bytes": states_bytes, "instances_bytes": instances_bytes, "shared_bytes": shared_bytes,
                   "total_bytes": states_bytes + instances_bytes + shared_bytes}
        taken = (self.clock.monotonic(), figures)
        with self._lock:
            self._disk = taken
        return taken

    def _added(self, states: Sequence[Path], volumes: Sequence[Path], states_bytes: int) -> int:
        """Bytes the volumes add to the states' (what they share with the states counts once)."""
        if not volumes:
            return 0
        if not self.store.copy_on_write:
            return self.store.allocated_bytes(volumes)
        return max(0, self.store.allocated_bytes([*states, *volumes]) - states_bytes)
