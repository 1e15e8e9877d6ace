"""The `SnapshotStore` port: volumes, copy-on-write clones and space accounting.

A *volume* is a directory that holds one PostgreSQL data directory (PGDATA is the volume
itself). States and instances are volumes; the store decides how a clone is made:
btrfs subvolume snapshots, reflink copies (XFS, btrfs), or plain copies as a last resort, or
whatever another package registers in the entry point group `sqlrs.snapshot_stores` (a
`SnapshotStorePlugin`, docs/extending.md; `sqlrs.testing.snapshots` checks a store's promises).
The service layer owns the layout and atomic commits (clone to a temporary name, rename,
metadata row in one transaction); the store only manipulates volumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import attrs

# A file written this close to when an earlier clone was taken may have changed again within the
# same timestamp tick (file times are coarse): it is never taken as unchanged.
UNCHANGED_MARGIN_SECONDS = 2.0


@attrs.frozen
class EarlierClone:
    """An immutable clone made earlier of the same (running) source, at `taken_at` (epoch
    seconds, read before that clone started)."""

    path: Path
    taken_at: float


class SnapshotStore(Protocol):
    """Creates, clones and deletes volumes below `root`."""

    backend: str  # the store's name: "btrfs", "reflink", "copy", or a plugin's
    root: Path
    # True: a clone shares its data with the source until either is written (cheap in time and disk,
    # so the services keep spare clones ahead); False: a clone copies the data.
    copy_on_write: bool

    def create(self, path: Path) -> None:
        """Create a new empty writable volume at `path` (parent exists, `path` does not)."""
        ...

    def clone(self, source: Path, target: Path, earlier: EarlierClone | None = None) -> None:
        """Make `target` a writable copy of the volume `source`, preserving ownership and modes.

        Writes to either side are never visible in the other. `target` must not exist.
        On failure nothing is left at `target`.

        `earlier`: an immutable clone of `source` made before, that `target` will never be
        written like (both are states). A store that copies data may share with it the files
        that have not changed since (same size and modification time, and older than the earlier
        clone by UNCHANGED_MARGIN_SECONDS or holding the same bytes), as hard links;
        copy-on-write stores ignore it.
        """
        ...

    def delete(self, path: Path) -> None:
        """Remove a volume and everything in it. Idempotent: a missing path is fine."""
        ...

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        """Bytes really allocated on disk by `paths` together, shared extents counted once
        where the filesystem can say (otherwise: the sum of allocated blocks)."""
        ...

    def free_bytes(self) -> int:
        """Bytes available to unprivileged writers on the filesystem holding `root`."""
        ...

    def total_bytes(self) -> int:
        """Size of the filesystem holding `root` (free space plus everything allocated)."""
        ...

    def settle(self, timeout: float = 60.0) -> None:
        """Flush the store's filesystem and wait (up to `timeout` seconds) until the space of
        deleted volumes is really free, so that `free_bytes()` reflects the deletes (btrfs frees
        deleted subvolumes in a background cleaner, XFS frees unlinked inodes lazily). Eviction
        calls it between deleting states and measuring free space again."""
        ...

    def sync(self, path: Path) -> None:
        """Flush the filesystem holding `path` (a volume below `root`) to disk, so that a
        volume renamed into place afterwards survives a machine crash whole: the services call
        it before every commit rename."""
        ...


@attrs.frozen
class SnapshotStorePlugin:
    """What an entry point of the group `sqlrs.snapshot_stores` names (its name is the entry point's)."""

    name: str
    open: Callable[[Path], SnapshotStore]  # the store on `root` (an existing directory)
    # whether the store works on the filesystem holding `root`, and why (not): found by doing the real
    # operations there (create, clone, delete a probe volume), leaving nothing behind; never raises
    probe: Callable[[Path], tuple[bool, str]]
    # `auto` takes the working store of the highest priority (built in: btrfs 300, reflink 200, copy 100)
    priority: int
    hint: str = ""  # what to do when this store was asked for and does not work
    # the filesystem (`mkfs.<volume_fs>`) of a loop volume `sqlrs init local --snapshot NAME` makes for
    # the store; None: the store needs none
    volume_fs: str | None = None
