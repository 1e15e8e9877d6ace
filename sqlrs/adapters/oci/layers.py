"""A state's layer: the tar (zstd) of its data directory's difference to its parent's.

The base state's layer holds its whole data directory. A step's layer holds what the step
changed: new and changed files and directories (a file counts as changed when its type, size,
mode or mtime differ from the parent's: PostgreSQL writes files in place, and every clone the
snapshot store makes keeps mtimes), and an OCI whiteout (`dir/.wh.NAME`, empty) for each path
that the parent has and the state has not. So a chain's layers add up to about the size of its
last state, and pulling a chain materializes every state of it, as a build would.

Both directions stream: tar -> zstd -> sha256 -> file, and file -> zstd -> tar -> data dir; no
layer is held in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

from sqlrs.domain.remote import LayerError

__all__ = ["LayerError", "apply_layer", "write_layer"]

WHITEOUT = ".wh."


ZSTD_LEVEL = 3


class _HashingWriter:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]):
        self.target = target
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hasher.update(view)
        self.size += len(view)
        return self.target.write(view)

    def flush(self) -> None:
        self.target.flush()


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path below `root` (relative, sorted, parents before children) with its lstat."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, os.lstat(os.path.join(dirpath, name))


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode) and a.st_mode == b.st_mode
            and a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns)


def write_layer(state_dir: Path, parent_dir: Path | None, out: Path) -> tuple[str, int, int]:
    """Write the layer of `state_dir` (against `parent_dir`, or whole) to `out`.

    Returns (sha256 digest "sha256:...", compressed size, number of tar entries)."""
    parent = dict(_entries(parent_dir)) if parent_dir is not None else {}
    seen: set[str] = set()
    count = 0
    with open(out, "wb") as raw:
        hashing = _HashingWriter(raw)
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        zwriter_cm = compressor.stream_writer(hashing, closefd=False)  # type: ignore[arg-type]
        with zwriter_cm as zwriter, tarfile.open(fileobj=zwriter, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel, st in _entries(state_dir):
                seen.add(rel)
                old = parent.get(rel)
                if old is not None and _same(old, st):
                    continue
                if old is not None and stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(old.st_mode) \
                        and st.st_mode == old.st_mode:
                    continue  # a directory's own mtime changes with its entries; they travel
                info = tar.gettarinfo(str(state_dir / rel), arcname=rel)
                if info.isreg():
                    with open(state_dir / rel, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
                count += 1
            for rel in parent:
                head, _, name = rel.rpartition("/")
                if rel in seen or (head and head not in seen):
                    continue  # kept, or inside a directory that is gone as a whole
                info = tarfile.TarInfo(f"{head}/{WHITEOUT}{name}" if head else f"{WHITEOUT}{name}")
                info.mode = 0o600
                tar.addfile(info)
                count += 1
        raw.flush()
        os.fsync(raw.fileno())
    return f"sha256:{hashing.hasher.hexdigest()}", hashing.size, count


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def apply_layer(blob: Path, target: Path, uid: int | None, gid: int | None) -> int:
    """Apply a layer to `target` (empty for a base, else a clone of the parent state).

    Files are owned by `uid`/`gid` (the local server user: uids differ between machines) when
    the engine runs as root. Returns the number of entries applied. Raises ValueError for a
    layer that is not a valid sqlrs layer (paths outside the target, links out of it)."""
    try:
        return _apply(blob, target, uid, gid)
    except (ValueError, EOFError, tarfile.TarError, zstandard.ZstdError) as exc:
        raise LayerError(f"{type(exc).__name__}: {exc}") from None


def _apply(blob: Path, target: Path, uid: int | None, gid: int | None) -> int:
    count = 0
    chown = os.geteuid() == 0 and uid is not None
    with open(blob, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                head, _, name = member.name.rpartition("/")
                if name.startswith(WHITEOUT):
                    victim = (target / head / name[len(WHITEOUT):]) if head else target / name[len(WHITEOUT):]
                    if not os.path.abspath(victim).startswith(os.path.abspath(target) + os.sep):
                        raise ValueError(f"whiteout outside the data directory: {member.name}")
                    _remove(victim)
                    count += 1
                    continue
                path = target / member.name
                if os.path.lexists(path) and (path.is_dir() != member.isdir() or path.is_symlink()):
                    _remove(path)
                # the "tar" filter refuses absolute paths and anything that would land outside
                tar.extract(member, target, set_attrs=True, filter="tar")
                if chown:
                    os.lchown(path, uid or 0, gid if gid is not None else -1)
                count += 1
    return count
