"""`btrfs` backend: every volume is a subvolume, a clone is a writable snapshot.

The three operations call the kernel ioctls directly (what `btrfs subvolume create|snapshot|
delete` do, minus a fork/exec and output parsing):

- create  = BTRFS_IOC_SUBVOL_CREATE on the parent directory,
- clone   = BTRFS_IOC_SNAP_CREATE_V2 (writable; flat cost in size, commits a transaction),
- delete  = BTRFS_IOC_SNAP_DESTROY; nested subvolumes are destroyed first (the kernel refuses
  with ENOTEMPTY otherwise), plain directories are removed recursively, and without
  CAP_SYS_ADMIN (no `user_subvol_rm_allowed`) a subvolume is emptied and rmdir'ed (Linux>=4.18).

A source that is a plain directory (not a subvolume root) is cloned into a new subvolume with
`cp -a --reflink=auto`: snapshotting it would snapshot the whole subvolume that contains it.
Space of a destroyed subvolume is reclaimed asynchronously by the btrfs cleaner thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.adapters.snapshots._base import VOLUME_MODE, BaseStore, TargetExists
from sqlrs.adapters.snapshots.copy import cp_tree

BTRFS_IOC_SUBVOL_CREATE = _fs._iow(0x94, 14, 4096)  # struct btrfs_ioctl_vol_args
BTRFS_IOC_SNAP_DESTROY = _fs._iow(0x94, 15, 4096)  # struct btrfs_ioctl_vol_args
BTRFS_IOC_SNAP_CREATE_V2 = _fs._iow(0x94, 23, 4096)  # struct btrfs_ioctl_vol_args_v2
BTRFS_IOC_SYNC = _fs._io(0x94, 8)  # commit the transaction, wake the cleaner
BTRFS_FIRST_FREE_OBJECTID = 256  # inode number of every subvolume's root directory
_VOL_ARGS = struct.Struct("=q4088s")  # fd, name[BTRFS_PATH_NAME_MAX + 1]
_VOL_ARGS_V2 = struct.Struct("=qQQ32s4040s")  # fd, transid, flags, union{...}, name[4040]


def _name(path: Path) -> bytes:
    name = os.fsencode(path.name)
    if not name or name in (b".", b"..") or b"/" in name or len(name) > 255:
        raise OSError(errno.EINVAL, "invalid subvolume name", str(path))
    return name


def _parent_ioctl(path: Path, request: int, arg: bytes) -> None:
    buf = bytearray(arg)  # fcntl copies immutable args into a 1,024-byte buffer; these are 4,096
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, request, buf, True)
    finally:
        os.close(fd)


def subvolume_create(path: Path) -> None:
    _parent_ioctl(path, BTRFS_IOC_SUBVOL_CREATE, _VOL_ARGS.pack(0, _name(path)))


def subvolume_snapshot(source: Path, target: Path, readonly: bool = False) -> None:
    flags = 1 << 1 if readonly else 0  # BTRFS_SUBVOL_RDONLY
    src_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        arg = _VOL_ARGS_V2.pack(src_fd, 0, flags, b"", _name(target))
        _parent_ioctl(target, BTRFS_IOC_SNAP_CREATE_V2, arg)
    finally:
        os.close(src_fd)


def subvolume_destroy(path: Path) -> None:
    _parent_ioctl(path, BTRFS_IOC_SNAP_DESTROY, _VOL_ARGS.pack(0, _name(path)))


def is_subvolume(path: Path, st: os.stat_result | None = None) -> bool:
    """True when `path` is the root directory of a btrfs subvolume."""
    try:
        st = st or os.lstat(path)
        return (
            stat.S_ISDIR(st.st_mode)
            and st.st_ino == BTRFS_FIRST_FREE_OBJECTID
            and _fs.fs_magic(path) == _fs.BTRFS_MAGIC
        )
    except OSError:
        return False


def nested_subvolumes(path: Path) -> list[Path]:
    """Subvolume roots strictly below `path` (not descending into them)."""
    found: list[Path] = []
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_ino == BTRFS_FIRST_FREE_OBJECTID:
                        found.append(Path(entry.path))
                    else:
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


class BtrfsStore(BaseStore):
    backend: str = "btrfs"
    copy_on_write = True

    def _create(self, path: Path) -> None:
        subvolume_create(path)
        os.chmod(path, VOLUME_MODE)

    def _clone(self, source: Path, target: Path) -> None:
        if is_subvolume(source):
            try:
                subvolume_snapshot(source, target)
                return
            except FileExistsError as exc:
                raise TargetExists(str(target)) from exc
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # another filesystem: copy below
                    raise
        try:
            subvolume_create(target)
        except FileExistsError as exc:
            raise TargetExists(str(target)) from exc
        cp_tree(source, target, "auto", f"cannot copy {source} into subvolume {target}")

    def _delete(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            _fs.remove_tree(path)
            return
        if not is_subvolume(path, st):
            for nested in nested_subvolumes(path):
                self._delete(nested)
            _fs.remove_tree(path)
            return
        try:
            subvolume_destroy(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:  # holds nested subvolumes
                for nested in nested_subvolumes(path):
                    self._delete(nested)
                subvolume_destroy(path)
                return
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
        # Not allowed to destroy subvolumes: empty it, then rmdir (Linux >= 4.18).
        for nested in nested_subvolumes(path):
            self._delete(nested)
        for entry in os.scandir(path):
            _fs.remove_tree(Path(entry.path))
        os.rmdir(path)

    def settle(self, timeout: float = 60.0) -> None:
        """Commit, wait for the cleaner to drop deleted subvolumes (`btrfs subvolume sync`),
        commit again: the freed extents become free space only with the next commit."""
        self._commit()
        tool = _fs.find_tool("btrfs")
        if tool is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    [tool, "subvolume", "sync", str(self.root)],
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
        self._commit()
        self._wait_free_stable(min(timeout, 2.0))

    def _commit(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, BTRFS_IOC_SYNC, 0)
        finally:
            os.close(fd)

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        """Bytes of the union of all physical data extents (FIEMAP), so data shared between
        snapshots counts once; metadata (tree blocks, inline files) is approximated."""
        return _fs.extent_bytes(paths)
