"""Standby clones: one ready clone per recently used state, so a cache hit renames, not clones.

A hit clones the state's volume before it starts a server on it: a btrfs snapshot (~8 ms, a
transaction commit) or one FICLONE per file on reflink (~1,100 files, ~20 ms on XFS). Right
after an instance of a state is made, the next clone of that state is made in the background,
and the next instance takes it with a rename. Only on copy-on-write stores: there a standby
clone costs a few hundred KB; on `copy` it would double the disk of every hot state. (Not the
warm pool's spares: those are started instances; a standby clone is only a data directory.)

Standby clones are disposable: nothing records them, the engine deletes any it finds when it starts,
and removing or evicting a state discards its standby clone (also one still being made), after the
warm instances kept for it (StateCatalog.remove: a warm instance's replacement starts on a standby
clone).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import threading
from pathlib import Path

from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.layout import Layout

log = logging.getLogger("sqlrs.engine")

DISCARD_WAIT = 60.0  # seconds a removal waits for a standby clone being made of its state


class StandbyClones:
    def __init__(self, store: SnapshotStore, layout: Layout):
        self.store = store
        self.layout = layout
        self.enabled = store.copy_on_write
        self._ready: dict[str, Path] = {}  # state id -> its standby volume
        self._making: dict[str, concurrent.futures.Future[None]] = {}
        self._generation: dict[str, int] = {}  # bumped by discard: a clone made before is stale
        self._lock = threading.Lock()
        self._maker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlrs-standby")

    def take(self, state_id: str, target: Path) -> bool:
        """Move the state's standby clone to `target` (which must not exist); False when there is none."""
        with self._lock:
            clone = self._ready.pop(state_id, None)
        if clone is None:
            return False
        try:
            os.rename(clone, target)
            return True
        except OSError as exc:
            log.warning("cannot use the standby clone %s: %s", clone, exc)
            self._delete(clone)
            return False

    def adopt(self, state_id: str, directory: Path) -> bool:
        """Take `directory`, a clone of the state made elsewhere (a build's scratch, shut down
        cleanly after the state's last step), as its standby clone, on any store: the instance the
        build is for then starts on it instead of a clone. False (nothing moved) when it has one."""
        with self._lock:
            if state_id in self._ready or state_id in self._making:
                return False
            target = self.layout.standby_dir / f"{state_id}.{secrets.token_hex(4)}"
            try:
                os.rename(directory, target)
            except OSError as exc:
                log.warning("cannot keep %s as the standby clone of state %s: %s", directory, state_id[:12], exc)
                return False
            self._ready[state_id] = target
            return True

    def refill(self, state_id: str, data_dir: Path) -> None:
        """Make a standby clone of the state in the background unless it has one or one is being made."""
        if not self.enabled:
            return
        with self._lock:
            if state_id in self._ready or state_id in self._making:
                return
            generation = self._generation.get(state_id, 0)
            try:
                self._making[state_id] = self._maker.submit(self._make, state_id, data_dir, generation)
            except RuntimeError:  # shutting down
                return

    def discard(self, state_id: str) -> None:
        """Forget and delete the state's standby clone, waiting for one being made (the state goes)."""
        with self._lock:
            self._generation[state_id] = self._generation.get(state_id, 0) + 1
            clone = self._ready.pop(state_id, None)
            making = self._making.get(state_id)
        if clone is not None:
            self._delete(clone)
        if making is not None:
            concurrent.futures.wait([making], timeout=DISCARD_WAIT)

    def close(self) -> None:
        """Stop making standby clones (those on disk stay until the next start deletes them)."""
        self._maker.shutdown(wait=True, cancel_futures=True)

    def clear_leftovers(self) -> None:
        """Delete every standby clone on disk: at engine start none is known."""
        for leftover in self.layout.standby_dir.iterdir():
            self._delete(leftover)

    def _make(self, state_id: str, data_dir: Path, generation: int) -> None:
        target = self.layout.standby_dir / f"{state_id}.{secrets.token_hex(4)}"
        clone: Path | None = target
        try:
            self.store.clone(data_dir, target)
        except Exception as exc:  # the state went meanwhile, or no space: a later hit just clones
            log.info("no standby clone of state %s: %s", state_id[:12], exc)
            clone = None
        with self._lock:
            self._making.pop(state_id, None)
            if clone is not None and self._generation.get(state_id, 0) == generation:
                self._ready[state_id] = clone
                return
        if clone is not None:  # discarded while it was being made
            self._delete(clone)

    def _delete(self, clone: Path) -> None:
        try:
            self.store.delete(clone)
        except Exception as exc:  # the next engine start deletes it
            log.warning("cannot delete the standby clone %s: %s", clone, exc)
