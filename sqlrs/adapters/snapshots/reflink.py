"""`reflink` backend: clones share every data extent with their source (XFS with reflink=1,
btrfs, bcachefs...).

A clone is a new directory tree whose files are FICLONE'd from the source's, made by
`cp -a --reflink=always` (measured ~15% faster than a Python FICLONE walk on a 1,900-file
PGDATA, and it keeps hard links, ACLs and xattrs). Cost grows with the number of files, not
with their size. Writes to either side copy the touched blocks only.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.adapters.snapshots._base import BaseStore, make_target_dir
from sqlrs.adapters.snapshots.copy import cp_tree, gnu_cp
from sqlrs.domain.errors import StoreFailure


class ReflinkStore(BaseStore):
    backend: str = "reflink"
    copy_on_write = True

    def _clone(self, source: Path, target: Path) -> None:
        if gnu_cp() is None:
            raise StoreFailure(
                "the reflink backend needs GNU cp (coreutils >= 8.32)",
                hint="install coreutils or use --snapshot copy",
            )
        make_target_dir(target)
        cp_tree(source, target, "always", f"cannot reflink {source} to {target}")

    def allocated_bytes(self, paths: Sequence[Path]) -> int:
        """Bytes of the union of all physical extents (FIEMAP), shared extents counted once."""
        return _fs.extent_bytes(paths)


def probe_ficlone(directory: Path) -> tuple[bool, str]:
    """Try a real FICLONE between two probe files in `directory`; (works, reason)."""
    name = f".sqlrs-probe-reflink-{os.getpid()}-{os.urandom(4).hex()}"
    src_path, dst_path = directory / f"{name}.a", directory / f"{name}.b"
    try:
        with open(src_path, "x+b") as src:
            src.write(b"sqlrs reflink probe\n" * 205)  # not block aligned on purpose: EOF clone
            src.flush()
            os.fsync(src.fileno())
            with open(dst_path, "xb") as dst:
                _fs.ficlone(src.fileno(), dst.fileno())
        if dst_path.read_bytes() != src_path.read_bytes():
            return False, "FICLONE returned but the clone differs from its source"
        return True, f"FICLONE works on {_fs.fs_name(directory)}"
    except OSError as exc:
        fs = _fs.fs_name(directory)
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EXDEV):
            return False, f"{fs} at {directory} does not support reflinks (FICLONE: {exc.strerror})"
        return False, f"FICLONE probe failed on {fs} at {directory}: {exc.strerror}"
    finally:
        for path in (src_path, dst_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
