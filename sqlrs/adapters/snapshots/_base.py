"""What every snapshot backend shares: path checks, clone-or-nothing, free space."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.domain.errors import SqlrsError, StoreFailure
from sqlrs.ports.snapshots import EarlierClone

VOLUME_MODE = 0o700


class TargetExists(Exception):
    """Raised by `_clone` implementations when the target appeared before they created it."""


class BaseStore:
    """Template for the `SnapshotStore` port.

    Subclasses implement `_create`, `_clone` (creating `target` atomically first and raising
    `TargetExists` if it is already there), `_delete` and `allocated_bytes`. This class checks
    that every path written or deleted lies strictly below `root`, and removes a half-made
    clone whatever goes wrong (including KeyboardInterrupt).
    """

    backend: str = ""
    copy_on_write: bool = False

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self._real_root = Path(os.path.realpath(self.root))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # --- port ------------------------------------------------------------------------------

    def create(self, path: Path) -> None:
        path = self._below_root(path, "create")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create(path)
        except FileExistsError as exc:
            raise StoreFailure(f"cannot create volume {path}: it already exists") from exc
        except OSError as exc:
            raise _fs.os_error(exc, f"cannot create volume {path}") from exc

    def clone(self, source: Path, target: Path, earlier: EarlierClone | None = None) -> None:
        target = self._below_root(target, "clone onto")
        source = Path(os.path.abspath(source))
        try:
            st = os.lstat(source)
        except OSError as exc:
            raise StoreFailure(f"cannot clone {source}: {exc.strerror}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise StoreFailure(f"cannot clone {source}: not a directory")
        what = f"cannot clone {source} to {target}"
        if os.path.lexists(target):
            raise StoreFailure(f"{what}: the target already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if earlier is not None and os.path.isdir(earlier.path):
                self._clone_sharing(source, target, earlier)
            else:
                self._clone(source, target)
        except TargetExists as exc:
            raise StoreFailure(f"{what}: the target already exists") from exc
        except BaseException as exc:
            self._discard(target)
            if isinstance(exc, SqlrsError):
                raise
            if isinstance(exc, OSError):
                raise _fs.os_error(exc, what) from exc
            raise

    def delete(self, path: Path) -> None:
        path = self._below_root(path, "delete")
        if not os.path.lexists(path):
            return
        busy = _fs.mounts_below(path)
        if busy:
            raise StoreFailure(
                f"cannot delete {path}: a filesystem is mounted at {busy[0]}",
                hint=f"unmount it first (umount {busy[0]})",
            )
        try:
            self._delete(path)
        except OSError as exc:
            raise _fs.os_error(exc, f"cannot delete {path}") from exc

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        raise NotImplementedError

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def total_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize

    def settle(self, timeout: float = 60.0) -> None:
        """Flush the store's filesystem and wait (up to `timeout` seconds) until the space of
        deleted volumes is really free, so that `free_bytes()` reflects the deletes. XFS frees
        unlinked inodes in a background worker (statfs only kicks it), btrfs frees deleted
        subvolumes in its cleaner thread."""
        _fs.syncfs(self.root)
        self._wait_free_stable(min(timeout, 2.0))

    def sync(self, path: Path) -> None:
        """Flush the filesystem holding `path` to disk (syncfs(2), sync(2) as a fallback)."""
        try:
            _fs.syncfs(path)
        except OSError:
            os.sync()

    def _wait_free_stable(self, limit: float, interval: float = 0.05, readings: int = 3) -> None:
        """Poll free space until `readings` consecutive readings `interval` apart agree (or
        `limit` seconds pass)."""
        deadline = time.monotonic() + limit
        previous, same = self.free_bytes(), 1
        while same < readings and time.monotonic() < deadline:
            time.sleep(interval)
            current = self.free_bytes()
            same = same + 1 if current == previous else 1
            previous = current

    # --- backend hooks ---------------------------------------------------------------------

    def _create(self, path: Path) -> None:
        os.mkdir(path, VOLUME_MODE)
        os.chmod(path, VOLUME_MODE)  # mkdir applies the umask

    def _clone(self, source: Path, target: Path) -> None:
        raise NotImplementedError

    def _clone_sharing(self, source: Path, target: Path, earlier: EarlierClone) -> None:
        """A clone that may share unchanged files with `earlier` (copy stores); by default a clone."""
        self._clone(source, target)

    def _delete(self, path: Path) -> None:
        _fs.remove_tree(path)

    # --- helpers ---------------------------------------------------------------------------

    def _discard(self, target: Path) -> None:
        """Best-effort removal of a half-made clone; never masks the original error."""
        try:
            self._delete(target)
        except Exception:
            with contextlib.suppress(Exception):
                _fs.remove_tree(target)

    def _below_root(self, path: Path, verb: str) -> Path:
        """`path` made absolute; refuses the root itself and anything outside it."""
        absolute = Path(os.path.abspath(path))
        name = absolute.name
        try:
            real = Path(os.path.realpath(absolute.parent)) / name
        except OSError:
            real = absolute
        if name in ("", ".", "..") or real == self._real_root or not real.is_relative_to(self._real_root):
            raise StoreFailure(f"refusing to {verb} {path}: not below the store root {self.root}")
        return absolute


def make_target_dir(target: Path) -> None:
    """Create the clone's top directory atomically (0700 until the copy sets the real mode)."""
    try:
        os.mkdir(target, VOLUME_MODE)
    except FileExistsError as exc:
        raise TargetExists(str(target)) from exc
