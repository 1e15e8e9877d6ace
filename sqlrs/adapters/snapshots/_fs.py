"""Low-level Linux filesystem helpers shared by the snapshot backends.

Everything here talks to the kernel directly (statfs, FICLONE, FIEMAP, /proc/self/mountinfo)
or runs a coreutils/util-linux tool; nothing is simulated.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlrs.domain.errors import NoSpace, SqlrsError, StoreFailure

# --- filesystem type (statfs f_type) ---------------------------------------------------------

BTRFS_MAGIC = 0x9123683E
XFS_MAGIC = 0x58465342
FS_NAMES = {
    BTRFS_MAGIC: "btrfs",
    XFS_MAGIC: "xfs",
    0xEF53: "ext4",
    0x01021994: "tmpfs",
    0x794C7630: "overlayfs",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0x65735546: "fuse",
    0x4D44: "vfat",
    0x5346544E: "ntfs",
    0xF2F52010: "f2fs",
    0x01021997: "9p",
    0x858458F6: "ramfs",
    0x6E736673: "nsfs",
    0xCA451A4E: "bcachefs",
}

_libc: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def fs_magic(path: Path) -> int | None:
    """statfs(2) f_type of the filesystem holding `path` (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    libc = _get_libc()
    if libc.statfs(os.fsencode(str(path)), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    (f_type,) = struct.unpack_from("l", buf.raw, 0)
    return int(f_type) & 0xFFFFFFFF


def fs_name(path: Path) -> str:
    """A human name for the filesystem type holding `path` ("ext4", "btrfs", "0x1234abcd"...)."""
    try:
        magic = fs_magic(path)
    except OSError:
        return "unknown"
    if magic is None:
        return sys.platform
    return FS_NAMES.get(magic, f"0x{magic:x}")


def syncfs(path: Path) -> None:
    """syncfs(2) on the filesystem holding `path` (os.sync() off Linux)."""
    if not sys.platform.startswith("linux"):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _get_libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


# --- ioctls ----------------------------------------------------------------------------------


def _iow(kind: int, nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (kind << 8) | nr


def _io(kind: int, nr: int) -> int:
    return (kind << 8) | nr


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


FICLONE = _iow(0x94, 9, 4)
FS_IOC_FIEMAP = _iowr(ord("f"), 11, 32)


def ficlone(src_fd: int, dst_fd: int) -> None:
    """Make the file behind `dst_fd` share all of `src_fd`'s extents (raises OSError)."""
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


# --- FIEMAP ----------------------------------------------------------------------------------

FIEMAP_MAX_OFFSET = 0xFFFFFFFFFFFFFFFF
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_SHARED = 0x2000
_FIEMAP_HEADER = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")
_FIEMAP_BATCH = 512


@dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int


def fiemap(fd: int) -> Iterator[Extent]:
    """All extents of an open file (raises OSError EOPNOTSUPP/ENOTTY where unsupported)."""
    start = 0
    while True:
        buf = bytearray(_FIEMAP_HEADER.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEADER.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET - start, 0, 0, _FIEMAP_BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _FIEMAP_HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return
        last: Extent | None = None
        for i in range(mapped):
            logical, physical, length, _r1, _r2, flags, *_ = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size
            )
            last = Extent(logical, physical, length, flags)
            yield last
        assert last is not None
        if last.flags & FIEMAP_EXTENT_LAST or mapped < _FIEMAP_BATCH:
            return
        start = last.logical + last.length


def walk_entries(paths: Iterable[Path]) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every entry below and including each of `paths`, never following
    symlinks; missing paths are skipped."""
    for top in paths:
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            continue
        yield str(top), st
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [str(top)]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as it:
                    for entry in it:
                        try:
                            est = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        yield entry.path, est
                        if stat.S_ISDIR(est.st_mode):
                            stack.append(entry.path)
            except (FileNotFoundError, NotADirectoryError):
                continue


def blocks_bytes(paths: Sequence[Path]) -> int:
    """Sum of st_blocks*512 of every entry below `paths`, each inode (hard links, repeated or
    nested paths) counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _p, st in walk_entries(paths):
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        total += st.st_blocks * 512
    return total


def extent_bytes(paths: Sequence[Path]) -> int:
    """Allocated bytes below `paths` with every physical extent counted once.

    Regular files are mapped with FIEMAP and the physical ranges of all files of all paths are
    merged, so data shared by reflinks or btrfs snapshots counts once however many files refer
    to it. Delayed-allocation and inline extents (no physical address yet) count at their
    length per inode; directories, symlinks and files that cannot be mapped count their
    st_blocks. Not seen: metadata (btrfs tree blocks, XFS inodes) and the unreferenced tail of
    partially overwritten btrfs extents ("bookends").
    """
    seen: set[tuple[int, int]] = set()
    ranges: list[tuple[int, int]] = []
    loose = 0
    for path, st in walk_entries(paths):
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        if not stat.S_ISREG(st.st_mode) or st.st_blocks == 0:
            loose += st.st_blocks * 512
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            loose += st.st_blocks * 512
            continue
        try:
            for ext in fiemap(fd):
                if ext.flags & (FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN):
                    loose += ext.length
                else:
                    ranges.append((ext.physical, ext.physical + ext.length))
        except OSError:
            loose += st.st_blocks * 512
        finally:
            os.close(fd)
    ranges.sort()
    shared_total = 0
    cur_start = cur_end = -1
    for start, end in ranges:
        if start > cur_end:
            if cur_end > cur_start:
                shared_total += cur_end - cur_start
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    if cur_end > cur_start:
        shared_total += cur_end - cur_start
    return shared_total + loose


# --- mounts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    """The mount table of this process's namespace (empty off Linux)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    result = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        lf = left.split()
        rf = right.split()
        if len(lf) < 6 or len(rf) < 2:
            continue
        result.append(
            MountEntry(
                mountpoint=_unescape(lf[4]),
                fstype=rf[0],
                source=_unescape(rf[1]),
                options=lf[5] + ("," + rf[2] if len(rf) > 2 else ""),
            )
        )
    return result


def find_mount(mountpoint: Path) -> MountEntry | None:
    """The topmost mount exactly at `mountpoint` (symlinks resolved), or None."""
    target = os.path.realpath(mountpoint)
    found = None
    for entry in mounts():
        if entry.mountpoint == target:
            found = entry  # later lines are mounted on top
    return found


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below `path`."""
    target = os.path.realpath(path)
    prefix = target.rstrip("/") + "/"
    return [m.mountpoint for m in mounts() if m.mountpoint == target or m.mountpoint.startswith(prefix)]


# --- removal ---------------------------------------------------------------------------------


def _grant_owner_rwx(path: Path) -> None:
    """chmod u+rwx every directory below `path` (an unprivileged owner may lack the bits)."""
    for entry_path, st in walk_entries([path]):
        if stat.S_ISDIR(st.st_mode) and (st.st_mode & stat.S_IRWXU) != stat.S_IRWXU:
            with contextlib.suppress(OSError):
                os.chmod(entry_path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        _grant_owner_rwx(path)
        shutil.rmtree(path, ignore_errors=False)


# --- subprocesses ----------------------------------------------------------------------------

_NOSPACE_TEXT = ("No space left on device", "Disk quota exceeded")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """`name` on PATH, or in the sbin directories a non-login root shell may lack."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def run(argv: Sequence[str], what: str, hint: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool; a non-zero exit becomes StoreFailure (NoSpace for ENOSPC/EDQUOT)."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as exc:
        raise StoreFailure(f"{what}: {argv[0]} not found", hint=hint) from exc
    if proc.returncode != 0:
        message = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
        first = message.splitlines()[0] if message else ""
        if any(text in message for text in _NOSPACE_TEXT):
            raise NoSpace(
                f"{what}: {first}",
                hint="free space on the store filesystem or grow it",
                details={"command": list(argv), "stderr": message},
            )
        raise StoreFailure(f"{what}: {first}", hint=hint, details={"command": list(argv), "stderr": message})
    return proc


def os_error(exc: OSError, what: str, hint: str | None = None) -> SqlrsError:
    """Turn an OSError into StoreFailure or NoSpace with a one-line message."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{what}: {reason}", hint="free space on the store filesystem or grow it")
    return StoreFailure(f"{what}: {reason}", hint=hint, details={"errno": exc.errno})
