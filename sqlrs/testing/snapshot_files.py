"""Files for the snapshot store contract (sqlrs.testing.snapshots): volumes shaped like PostgreSQL
data directories, changed as a server would change them, and trees to compare what a clone kept.

Made-up owners on purpose: a clone must keep ownership whoever owns the files, so the suite runs
as root and gives files uids no account on the host has.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from sqlrs.ports.snapshots import SnapshotStore

MiB = 1 << 20
OWNER = (54321, 54322)  # made-up ids: ownership must survive clones whoever owns the files
PG_OWNER = (101, 104)


def walk_entries(path: Path) -> list[tuple[str, os.stat_result]]:
    """(path, lstat) of `path` and everything below it, symlinks not followed."""
    found = [(str(path), os.lstat(path))]
    for dirpath, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            full = os.path.join(dirpath, name)
            found.append((full, os.lstat(full)))
    return found


def write_file(path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] = OWNER) -> None:
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(size // MiB):
            handle.write(os.urandom(MiB))
        handle.write(os.urandom(size % MiB))
        handle.flush()
        os.fsync(handle.fileno())


def make_pgdata_like(store: SnapshotStore, path: Path) -> None:
    """A volume shaped like PGDATA: 0700 root owned by an unprivileged uid, nested dirs, 8 KiB
    pages, an empty file, a symlink, a hard link, a file owned by another user."""
    store.create(path)
    for sub in ("base/1", "base/5", "global", "pg_wal/archive_status", "pg_tblspc"):
        (path / sub).mkdir(parents=True)
    write_file(path / "PG_VERSION", b"15\n")
    write_file(path / "postgresql.conf", b"shared_buffers = 16MB\n" * 50, mode=0o640)
    write_file(path / "base/1/1259", os.urandom(8192 * 12))
    write_file(path / "base/5/16384", os.urandom(8192 * 3))
    write_file(path / "base/5/16384_fsm", b"")
    write_file(path / "global/pg_control", os.urandom(8192))
    write_file(path / "pg_wal/000000010000000000000001", os.urandom(MiB))
    write_file(path / "pg_wal/archive_status/keep", b"x", mode=0o400, owner=PG_OWNER)
    os.symlink("../base/5", path / "pg_tblspc/16390")
    os.lchown(path / "pg_tblspc/16390", *OWNER)
    os.link(path / "PG_VERSION", path / "global/PG_VERSION.hardlink")
    for dirpath, _dirs, _files in os.walk(path):
        os.chown(dirpath, *OWNER)
        os.chmod(dirpath, 0o700)
    os.chmod(path / "pg_wal", 0o750)


def write_like_postgres(volume: Path) -> None:
    """Change a volume made by `make_pgdata_like` as a server would: a page written in place, a
    relation dropped, another one created."""
    with open(volume / "base/1/1259", "r+b") as handle:
        handle.seek(8192 * 5)
        handle.write(b"\xff" * 8192)
    (volume / "base/5/16384").unlink()
    write_file(volume / "base/5/new", b"new")


def tree(path: Path) -> dict[str, tuple[object, ...]]:
    """Everything a clone must preserve, by relative path (the root itself is "")."""
    result: dict[str, tuple[object, ...]] = {}
    for entry, st in walk_entries(path):
        rel = os.path.relpath(entry, path) if entry != str(path) else ""
        kind = stat.S_IFMT(st.st_mode)
        common = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(Path(entry).read_bytes()).hexdigest()
            result[rel] = (*common, st.st_size, digest, st.st_mtime_ns, st.st_nlink)
        elif stat.S_ISLNK(st.st_mode):
            result[rel] = (*common, os.readlink(entry))
        else:
            result[rel] = common
    return result


def content(path: Path) -> dict[str, tuple[object, ...]]:
    """A tree without link counts."""
    return {rel: entry[:-1] if entry[0] == stat.S_IFREG else entry for rel, entry in tree(path).items()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
