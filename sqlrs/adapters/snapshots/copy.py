"""`copy` backend: every clone is a full, independent copy (the last resort).

Clones run `cp -a --reflink=never` (GNU coreutils: keeps owners, modes, timestamps, symlinks,
hard links, sparse files, ACLs and xattrs, and is faster than a Python walk). Without GNU cp a
Python walk does the same for owners, modes, timestamps and symlinks.
"""

from __future__ import annotations

import contextlib
import filecmp
import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.adapters.snapshots._base import BaseStore, make_target_dir
from sqlrs.ports.snapshots import UNCHANGED_MARGIN_SECONDS, EarlierClone


@functools.cache
def gnu_cp() -> str | None:
    """Path of GNU cp (needed for `--reflink`), or None."""
    cp = _fs.find_tool("cp")
    if cp is None:
        return None
    try:
        out = subprocess.run([cp, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    return cp if "GNU coreutils" in out else None


def cp_tree(source: Path, target: Path, reflink: str, what: str) -> None:
    """Copy the contents and attributes of directory `source` onto the existing `target` dir."""
    cp = gnu_cp()
    if cp is None:
        python_copy_tree(source, target)
        return
    _fs.run([cp, "-a", f"--reflink={reflink}", "--", f"{source}/.", f"{target}/"], what)


def python_copy_tree(source: Path, target: Path) -> None:
    """Fallback full copy: contents, owners, modes, timestamps, symlinks, hard links and special
    files (no ACLs/xattrs). `target` exists and receives `source`'s own attributes too."""
    _copy_dir_contents(str(source), str(target), {})
    _copy_attrs(str(target), os.lstat(source))


def _copy_dir_contents(src: str, dst: str, links: dict[tuple[int, int], str],
                       earlier: tuple[str, int] | None = None) -> None:
    """Copy `src`'s entries into `dst`; with `earlier` (a directory, a time in ns), a regular file
    whose counterpart there has its size and modification time, older than that time, is a hard
    link to that counterpart instead of a copy."""
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d, 0o700)
            _copy_dir_contents(s, d, links, (os.path.join(earlier[0], entry.name), earlier[1]) if earlier else None)
        elif earlier is not None and stat.S_ISREG(st.st_mode) and \
                _unchanged(s, st, os.path.join(earlier[0], entry.name), earlier[1]):
            os.link(os.path.join(earlier[0], entry.name), d)
            continue
        else:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], d, follow_symlinks=False)
                continue
            links[key] = d
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d, follow_symlinks=False)
            else:
                os.mknod(d, st.st_mode, st.st_rdev)
        _copy_attrs(d, st)


def _unchanged(path: str, st: os.stat_result, counterpart: str, before_ns: int) -> bool:
    """Does the file at `path` hold what `counterpart` holds? Same size, mode, owner and time, and
    written before `before_ns`; written later (within the same coarse timestamp tick it could have
    changed again), the same bytes."""
    try:
        other = os.lstat(counterpart)
    except OSError:
        return False
    if not (stat.S_ISREG(other.st_mode) and other.st_size == st.st_size and other.st_mtime_ns == st.st_mtime_ns
            and other.st_mode == st.st_mode and other.st_uid == st.st_uid and other.st_gid == st.st_gid):
        return False
    return st.st_mtime_ns < before_ns or filecmp.cmp(path, counterpart, shallow=False)


def _copy_attrs(dst: str, st: os.stat_result) -> None:
    if os.geteuid() == 0 or st.st_uid == os.geteuid():
        with contextlib.suppress(PermissionError):
            os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


class CopyStore(BaseStore):
    """Full copies; works on any filesystem, costs seconds per GB and no sharing."""

    backend: str = "copy"
    copy_on_write = False

    def _clone(self, source: Path, target: Path) -> None:
        make_target_dir(target)
        cp_tree(source, target, "never", f"cannot copy {source} to {target}")

    def _clone_sharing(self, source: Path, target: Path, earlier: EarlierClone) -> None:
        """Copy what changed since `earlier` was taken, hard-link the rest to it (rsync's
        --link-dest rule: same size and modification time; for a file written just before
        `earlier` was taken, the same bytes). A state of a migration history then costs, in time
        and disk, about what its steps changed, not a whole data directory."""
        make_target_dir(target)
        before_ns = int((earlier.taken_at - UNCHANGED_MARGIN_SECONDS) * 1e9)
        _copy_dir_contents(str(source), str(target), {}, (str(earlier.path), before_ns))
        _copy_attrs(str(target), os.lstat(source))

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        """Sum of allocated blocks; each inode counted once (hard links, overlapping paths)."""
        return _fs.blocks_bytes(paths)
