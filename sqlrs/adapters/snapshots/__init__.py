"""SnapshotStore adapters: btrfs subvolume snapshots, reflink copies, full copies.

`open_store(root, "auto")` probes the filesystem holding `root` by doing the real operations
there (create + snapshot + delete a subvolume; FICLONE between two files), in the order
btrfs, reflink, copy, and returns the first backend that works.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.adapters.snapshots._base import BaseStore
from sqlrs.adapters.snapshots.btrfs import BtrfsStore
from sqlrs.adapters.snapshots.copy import CopyStore
from sqlrs.adapters.snapshots.reflink import ReflinkStore, probe_ficlone
from sqlrs.domain.errors import SqlrsError, StoreFailure, UsageError
from sqlrs.ports.snapshots import SnapshotStore

__all__ = [
    "BACKENDS",
    "BaseStore",
    "BtrfsStore",
    "CopyStore",
    "ReflinkStore",
    "open_store",
    "probe_backends",
    "select_backend",
]

BACKENDS: tuple[str, ...] = ("btrfs", "reflink", "copy")
_STORES: dict[str, type[BaseStore]] = {"btrfs": BtrfsStore, "reflink": ReflinkStore, "copy": CopyStore}
_HINTS = {
    "btrfs": "run `sqlrs init local --snapshot btrfs` to put the store on a btrfs loop volume, or use --snapshot auto",
    "reflink": "put the store on XFS (mkfs.xfs -m reflink=1) or btrfs, or use --snapshot auto",
    "copy": "make the store directory writable by the engine's user",
}


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


_PROBES = {"btrfs": _probe_btrfs, "reflink": probe_ficlone, "copy": _probe_copy}


def _ensure_root(root: Path) -> str | None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the store directory {root}: {exc.strerror}"
    return None


def probe_backends(root: Path) -> list[tuple[str, bool, str]]:
    """(backend, available, reason) for btrfs, reflink and copy, best first, found by really
    creating and cloning probe volumes/files in `root` (created if missing) and removing them."""
    root = Path(os.path.abspath(root))
    problem = _ensure_root(root)
    if problem:
        return [(name, False, problem) for name in BACKENDS]
    return [(name, *_PROBES[name](root)) for name in BACKENDS]


def open_store(root: Path, backend: str = "auto") -> SnapshotStore:
    """The store for `root` (created if missing) with the requested or best working backend.

    Raises UsageError for an unknown backend name and StoreFailure (one-line reason plus a hint)
    when the requested backend does not work on the filesystem holding `root`.
    """
    return select_backend(root, backend)[0]


def select_backend(root: Path, backend: str = "auto") -> tuple[SnapshotStore, list[str]]:
    """`open_store`, plus why the better backends were passed over ("btrfs: ... on ext4";
    empty when the requested or best backend worked), for warnings about a copy fallback."""
    root = Path(os.path.abspath(root))
    if backend != "auto" and backend not in _STORES:
        if backend == "zfs":
            raise StoreFailure(
                "the zfs snapshot backend is not implemented yet",
                hint="use --snapshot auto, btrfs, reflink or copy",
            )
        raise UsageError(f"unknown snapshot backend {backend!r}", hint="choose one of auto, btrfs, reflink, copy")
    problem = _ensure_root(root)
    if problem:
        raise StoreFailure(problem, hint="choose a writable store location")
    reasons: list[str] = []
    for name in BACKENDS if backend == "auto" else (backend,):
        ok, reason = _PROBES[name](root)
        if ok:
            return _STORES[name](root), reasons
        reasons.append(f"{name}: {reason}")
    if backend == "auto":
        raise StoreFailure(f"no snapshot backend works at {root} ({'; '.join(reasons)})", hint=_HINTS["copy"])
    raise StoreFailure(f"snapshot backend {backend} is not usable: {reason}", hint=_HINTS[backend])
