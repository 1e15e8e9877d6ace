"""What a subclass of the snapshot store contract (sqlrs.testing.snapshots) knows of its store beyond
the port: flushing, what a clone like an earlier one shares, its own kind of crash leftovers, and
what a clone costs. The defaults ask only what the port promises (a `copy_on_write` store shares
a clone's data); a store that promises more checks it in its override.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.testing.snapshot_files import MiB


class SnapshotStoreHooks:
    """The hooks of SnapshotStoreContract, with their defaults."""

    def settle(self, store: SnapshotStore) -> None:
        """Flush, so that allocation and free space are what the filesystem will keep."""
        os.sync()
        store.settle()

    # hooks: what a subclass knows of its store beyond the port
    def check_shared_with_earlier(self, store: SnapshotStore, earlier: Path, clone: Path) -> None:
        """After `clone` was made like `earlier` (unchanged since: PG_VERSION, base/5/16384_fsm,
        global/pg_control, postgresql.conf; changed: base/1/1259): what the store shares."""

    def add_crash_leftovers(self, store: SnapshotStore, volume: Path, directory: Path) -> None:
        """Make the store's own kind of leftovers inside a half-made volume and directory."""

    def check_crash_leftovers_gone(self, store: SnapshotStore) -> None:
        """After the half-made volume and directory were deleted: nothing of them is left."""

    def check_clone_space(self, store: SnapshotStore, source: Path, clone: Path, single: int, both: int) -> None:
        """A 64 MiB volume `source` took `single` bytes, with its `clone` `both`."""
        if store.copy_on_write:
            self.assert_shares_until_written(store, source, clone, single, both)

    def assert_shares_until_written(self, store: SnapshotStore, source: Path, clone: Path, single: int,
                                    both: int) -> None:
        """A clone shares its source's data, and writing 16 MiB of it costs about that much more."""
        assert both < 1.2 * single, (single, both)
        with open(clone / "data", "r+b") as handle:  # copy-on-write of 16 MiB
            handle.seek(16 * MiB)
            handle.write(os.urandom(16 * MiB))
            handle.flush()
            os.fsync(handle.fileno())
        self.settle(store)
        grown = store.allocated_bytes([source, clone])
        assert 14 * MiB <= grown - both <= 20 * MiB, (both, grown)
