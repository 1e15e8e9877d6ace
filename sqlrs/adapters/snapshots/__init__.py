"""SnapshotStore adapters: btrfs subvolume snapshots, reflink copies, full copies.

`BTRFS`, `REFLINK` and `COPY` register them (entry point group `sqlrs.snapshot_stores`), beside
any store another package registers. `open_store(root, "auto")` probes the filesystem holding
`root` by doing the real operations there (create + snapshot + delete a subvolume; FICLONE
between two files), store by store from the highest priority down (btrfs, reflink, copy), and
returns the first that works.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from sqlrs import extensions
from sqlrs.adapters.snapshots import _fs
from sqlrs.adapters.snapshots._base import BaseStore
from sqlrs.adapters.snapshots.btrfs import BtrfsStore
from sqlrs.adapters.snapshots.copy import CopyStore
from sqlrs.adapters.snapshots.reflink import ReflinkStore, probe_ficlone
from sqlrs.domain.errors import SqlrsError, StoreFailure, UsageError
from sqlrs.ports.snapshots import SnapshotStore, SnapshotStorePlugin

__all__ = [
    "BTRFS",
    "COPY",
    "REFLINK",
    "BaseStore",
    "BtrfsStore",
    "CopyStore",
    "ReflinkStore",
    "open_store",
    "probe_backends",
    "registered_stores",
    "select_backend",
]

log = logging.getLogger("sqlrs.engine")


def _probe_name(kind: str) -> str:
    return f".sqlrs-probe-{kind}-{os.getpid()}-{os.urandom(4).hex()}"


def _probe_btrfs(root: Path) -> tuple[bool, str]:
    fs = _fs.fs_name(root)
    if fs != "btrfs":
        return False, f"{root} is on {fs}, not btrfs"
    store = BtrfsStore(root)
    first, second = root / _probe_name("btrfs"), root / _probe_name("btrfs")
    try:
        store.create(first)
        (first / "probe").write_bytes(b"source")
        store.clone(first, second)
        (second / "probe").write_bytes(b"clone")
        if (first / "probe").read_bytes() != b"source":
            return False, "a write to a btrfs snapshot changed its source"
        return True, "btrfs subvolume create/snapshot/delete work"
    except (OSError, SqlrsError) as exc:
        return False, f"btrfs subvolumes do not work at {root}: {getattr(exc, 'message', exc)}"
    finally:
        for path in (second, first):
            with contextlib.suppress(OSError, SqlrsError):
                store.delete(path)


def _probe_copy(root: Path) -> tuple[bool, str]:
    probe = root / _probe_name("copy")
    try:
        os.mkdir(probe, 0o700)
        os.rmdir(probe)
    except OSError as exc:
        return False, f"cannot write to {root}: {exc.strerror}"
    return True, f"full copies on {_fs.fs_name(root)} (slow, nothing shared)"


BTRFS = SnapshotStorePlugin(
    "btrfs", BtrfsStore, _probe_btrfs, priority=300, volume_fs="btrfs",
    hint="run `sqlrs init local --snapshot btrfs` to put the store on a btrfs loop volume, or use --snapshot auto")
REFLINK = SnapshotStorePlugin(
    "reflink", ReflinkStore, probe_ficlone, priority=200, volume_fs="xfs",
    hint="put the store on XFS (mkfs.xfs -m reflink=1) or btrfs, or use --snapshot auto")
COPY = SnapshotStorePlugin("copy", CopyStore, _probe_copy, priority=100,
                           hint="make the store directory writable by the engine's user")


def registered_stores() -> list[SnapshotStorePlugin]:
    """The stores registered in the entry point group `sqlrs.snapshot_stores`, highest priority
    first; one that cannot be loaded is logged and left out."""
    stores = []
    for name, loaded in extensions.load(extensions.SNAPSHOT_STORES, SnapshotStorePlugin):
        if isinstance(loaded, SnapshotStorePlugin):
            stores.append(loaded)
        else:
            log.warning("snapshot store %s cannot be used: %s: %s", name, type(loaded).__name__, loaded)
    return sorted(stores, key=lambda store: -store.priority)


def _ensure_root(root: Path) -> str | None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the store directory {root}: {exc.strerror}"
    return None


def probe_backends(root: Path, stores: Sequence[SnapshotStorePlugin] | None = None) -> list[tuple[str, bool, str]]:
    """(backend, available, reason) for every store (default: the registered ones), best first,
    found by really creating and cloning probe volumes/files in `root` (created if missing) and
    removing them."""
    stores = registered_stores() if stores is None else stores
    root = Path(os.path.abspath(root))
    problem = _ensure_root(root)
    if problem:
        return [(store.name, False, problem) for store in stores]
    return [(store.name, *store.probe(root)) for store in stores]


def open_store(root: Path, backend: str = "auto", stores: Sequence[SnapshotStorePlugin] | None = None) -> SnapshotStore:
    """The store for `root` (created if missing) with the requested or best working backend.

    Raises UsageError for an unknown backend name and StoreFailure (one-line reason plus a hint)
    when the requested backend does not work on the filesystem holding `root`.
    """
    return select_backend(root, backend, stores)[0]


def select_backend(root: Path, backend: str = "auto", stores: Sequence[SnapshotStorePlugin] | None = None) \
        -> tuple[SnapshotStore, list[str]]:
    """`open_store`, plus why the better backends were passed over ("btrfs: ... on ext4";
    empty when the requested or best backend worked), for warnings about a copy fallback.
    `stores`: the candidates, best first (default: the registered ones)."""
    stores = registered_stores() if stores is None else stores
    by_name = {store.name: store for store in stores}
    root = Path(os.path.abspath(root))
    if backend != "auto" and backend not in by_name:
        raise UsageError(f"unknown snapshot backend {backend!r}",
                         hint="choose one of " + ", ".join(["auto", *by_name]))
    problem = _ensure_root(root)
    if problem:
        raise StoreFailure(problem, hint="choose a writable store location")
    reasons: list[str] = []
    for store in stores if backend == "auto" else (by_name[backend],):
        ok, reason = store.probe(root)
        if ok:
            return store.open(root), reasons
        reasons.append(f"{store.name}: {reason}")
    if backend == "auto":
        last_resort = stores[-1].hint if stores else "install sqlrs again: it registers no snapshot store"
        raise StoreFailure(f"no snapshot backend works at {root} ({'; '.join(reasons)})", hint=last_resort)
    raise StoreFailure(f"snapshot backend {backend} is not usable: {reason}", hint=by_name[backend].hint)
