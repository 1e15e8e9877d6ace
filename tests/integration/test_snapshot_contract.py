"""The SnapshotStore contract (sqlrs/ports/snapshots.py), run unchanged against every backend on a real filesystem:

- btrfs   on a loop-mounted btrfs volume,
- reflink on a loop-mounted XFS volume made with `mkfs.xfs -m reflink=1`,
- copy    on a plain temporary directory (ext4 here).

The loop volumes are made by sqlrs's own `create_loop_volume` once per session under /tmp and
are unmounted and deleted at the end, also when tests fail. A backend that cannot be set up
here (not root, no mkfs tool, no loop devices) skips its tests with the reason, unless it is
named in `SQLRS_REQUIRE` (comma list, e.g. `btrfs,reflink`): then its tests fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from fakes import FakeSnapshotStore

from sqlrs.adapters.snapshots import BACKENDS, _fs, open_store, probe_backends
from sqlrs.adapters.snapshots.copy import CopyStore
from sqlrs.adapters.snapshots.loopvolume import (
    create_loop_volume,
    ensure_mounted,
    mounted_image,
    parse_volume_size,
    unmount,
)
from sqlrs.domain.errors import NoSpace, StoreFailure, UsageError
from sqlrs.ports.snapshots import EarlierClone, SnapshotStore

MiB = 1 << 20
VOLUME_SIZE = 1536 * MiB  # sparse: costs only what the tests write
OWNER = (54321, 54322)  # made-up ids: ownership must survive clones whoever owns the files
PG_OWNER = (101, 104)
REQUIRED = {name.strip() for name in os.environ.get("SQLRS_REQUIRE", "").split(",") if name.strip()}
FS_OF_BACKEND = {"btrfs": "btrfs", "reflink": "xfs", "copy": "plain"}
BACKEND_OF_FS = {"btrfs": "btrfs", "xfs": "reflink"}


def unavailable(backend: str, reason: str) -> NoReturn:
    """Skip, or fail when SQLRS_REQUIRE names the backend."""
    if backend in REQUIRED:
        pytest.fail(f"{backend} is required (SQLRS_REQUIRE={os.environ['SQLRS_REQUIRE']}) but {reason}")
    pytest.skip(f"{backend}: {reason}")


# --- session fixtures: scratch dir and loop volumes ------------------------------------------


def _unmount_below(path: Path) -> None:
    for point in sorted(_fs.mounts_below(path), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sqlrs-snaptest-", dir="/tmp"))
    try:
        yield path
    finally:
        _unmount_below(path)
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Volume:
    fs: str
    root: Path | None
    problem: str | None = None


@contextlib.contextmanager
def _loop_volume(scratch: Path, fs: str) -> Iterator[Volume]:
    if os.geteuid() != 0:
        yield Volume(fs, None, "loop volumes need root")
        return
    image, mountpoint = scratch / f"{fs}.img", scratch / f"{fs}-mnt"
    try:
        create_loop_volume(image, mountpoint, fs, VOLUME_SIZE)
    except (StoreFailure, UsageError, OSError) as exc:
        yield Volume(fs, None, f"cannot create a {fs} loop volume: {getattr(exc, 'message', exc)}")
        return
    try:
        yield Volume(fs, mountpoint)
    finally:
        with contextlib.suppress(StoreFailure):
            unmount(mountpoint)
        _unmount_below(mountpoint)
        image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def btrfs_volume(scratch: Path) -> Iterator[Volume]:
    with _loop_volume(scratch, "btrfs") as volume:
        yield volume


@pytest.fixture(scope="session")
def xfs_volume(scratch: Path) -> Iterator[Volume]:
    with _loop_volume(scratch, "xfs") as volume:
        yield volume


@pytest.fixture(scope="session")
def plain_volume(scratch: Path) -> Volume:
    path = scratch / "plain"
    path.mkdir()
    return Volume(_fs.fs_name(path), path)


def volume_for(request: pytest.FixtureRequest, backend: str) -> Path:
    fixture = {"btrfs": "btrfs_volume", "reflink": "xfs_volume", "copy": "plain_volume"}[backend]
    volume: Volume = request.getfixturevalue(fixture)
    if volume.root is None:
        unavailable(backend, volume.problem or "no volume")
    assert volume.root is not None
    return volume.root


@pytest.fixture(params=[*(pytest.param(name, marks=pytest.mark.backend(name)) for name in BACKENDS), "fake"])
def store(request: pytest.FixtureRequest) -> Iterator[SnapshotStore]:
    """A store on a fresh directory of the backend's filesystem, emptied afterwards; `fake` is the
    unit tests' store (tests/fakes.py) on a plain directory, held to the same contract."""
    backend: str = request.param
    base = volume_for(request, "copy" if backend == "fake" else backend)
    root = Path(tempfile.mkdtemp(prefix="store-", dir=base))
    try:
        opened = FakeSnapshotStore(root) if backend == "fake" else open_store(root, backend)
    except StoreFailure as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(backend, exc.message)
    assert opened.backend == backend
    try:
        yield opened
    finally:
        for entry in list(root.iterdir()):
            opened.delete(entry)
        root.rmdir()


# --- helpers ---------------------------------------------------------------------------------


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


def tree(path: Path) -> dict[str, tuple[object, ...]]:
    """Everything a clone must preserve, by relative path (the root itself is "")."""
    result: dict[str, tuple[object, ...]] = {}
    for entry, st in _fs.walk_entries([path]):
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


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def settle(store: SnapshotStore) -> None:
    """Flush so that allocation and free space are what the filesystem will keep."""
    os.sync()
    if store.backend == "btrfs":  # deleted subvolumes are freed by an asynchronous cleaner
        subprocess.run(["btrfs", "filesystem", "sync", str(store.root)], capture_output=True)
        subprocess.run(["btrfs", "subvolume", "sync", str(store.root)], capture_output=True)


# --- create / clone --------------------------------------------------------------------------


def test_create_makes_an_empty_private_writable_volume(store: SnapshotStore) -> None:
    volume = store.root / "v1"
    store.create(volume)
    assert volume.is_dir()
    assert list(volume.iterdir()) == []
    assert stat.S_IMODE(volume.stat().st_mode) == 0o700
    (volume / "f").write_bytes(b"ok")
    with pytest.raises(StoreFailure):
        store.create(volume)
    assert (volume / "f").read_bytes() == b"ok"


def test_clone_preserves_content_ownership_and_modes(store: SnapshotStore) -> None:
    source, clone = store.root / "source", store.root / "clone"
    make_pgdata_like(store, source)
    before = tree(source)
    store.clone(source, clone)
    assert tree(clone) == before
    assert tree(source) == before
    st = clone.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, *OWNER)
    assert (clone / "PG_VERSION").stat().st_ino == (clone / "global/PG_VERSION.hardlink").stat().st_ino


def test_clone_of_a_plain_directory(store: SnapshotStore) -> None:
    """A source made with mkdir rather than `create` (e.g. a pre-existing data dir) clones too."""
    source, clone = store.root / "plain", store.root / "clone"
    source.mkdir()
    write_file(source / "data", os.urandom(70_000))
    os.chown(source, *PG_OWNER)
    os.chmod(source, 0o700)
    store.clone(source, clone)
    assert tree(clone) == tree(source)
    (clone / "data").write_bytes(b"changed")
    assert (source / "data").stat().st_size == 70_000


def test_writes_are_isolated_both_ways(store: SnapshotStore) -> None:
    source, clone = store.root / "source", store.root / "clone"
    make_pgdata_like(store, source)
    store.clone(source, clone)
    source_tree = tree(source)

    with open(clone / "base/1/1259", "r+b") as handle:  # in-place page write, as Postgres does
        handle.seek(8192 * 5)
        handle.write(b"\xff" * 8192)
    (clone / "base/5/16384").unlink()
    write_file(clone / "base/5/new", b"new")
    os.chmod(clone / "postgresql.conf", 0o600)
    os.chown(clone / "PG_VERSION", *PG_OWNER)
    assert tree(source) == source_tree

    clone_tree = tree(clone)
    with open(source / "global/pg_control", "r+b") as handle:
        handle.write(b"\x00" * 512)
    (source / "pg_wal/000000010000000000000001").unlink()
    write_file(source / "base/1/extra", b"extra")
    assert tree(clone) == clone_tree


def test_a_clone_like_an_earlier_one_holds_the_source_and_shares_only_what_did_not_change(
        store: SnapshotStore) -> None:
    """`earlier` (the last kept state of a build): the clone is the source whatever the store
    does with it; a copy store shares (hard-links) the files unchanged since, and only those."""
    source, earlier, clone = store.root / "source", store.root / "earlier", store.root / "clone"
    make_pgdata_like(store, source)
    old = time.time() - 3600
    for dirpath, _dirs, files in os.walk(source):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
    taken_at = time.time()
    store.clone(source, earlier)

    def content(path: Path) -> dict[str, tuple[object, ...]]:  # a tree without link counts
        return {rel: entry[:-1] if entry[0] == stat.S_IFREG else entry for rel, entry in tree(path).items()}

    earlier_content = content(earlier)
    with open(source / "base/1/1259", "r+b") as handle:  # in-place page write, as Postgres does
        handle.seek(8192 * 5)
        handle.write(b"\xff" * 8192)
    (source / "base/5/16384").unlink()
    write_file(source / "base/5/new", b"new")
    store.clone(source, clone, EarlierClone(earlier, taken_at))
    assert content(clone) == content(source)
    assert content(earlier) == earlier_content
    if store.backend == "copy":
        same = {rel for rel in ("PG_VERSION", "base/5/16384_fsm", "global/pg_control", "postgresql.conf")
                if (clone / rel).stat().st_ino == (earlier / rel).stat().st_ino}
        assert same == {"PG_VERSION", "base/5/16384_fsm", "global/pg_control", "postgresql.conf"}
        assert (clone / "base/1/1259").stat().st_ino != (earlier / "base/1/1259").stat().st_ino
    # the source goes on being written: neither clone sees it
    clone_content = content(clone)
    with open(source / "global/pg_control", "r+b") as handle:
        handle.write(b"\x00" * 512)
    assert content(clone) == clone_content and content(earlier) == earlier_content


def test_files_written_just_before_the_earlier_clone_are_never_shared(store: SnapshotStore) -> None:
    """File times are coarse: a file written right before the earlier clone may have changed again
    within the same tick, with the same size and time. It is copied, not taken as unchanged."""
    source, earlier, clone = store.root / "source", store.root / "earlier", store.root / "clone"
    store.create(source)
    write_file(source / "page", b"a" * 8192)
    taken_at = time.time()
    store.clone(source, earlier)
    stamp = (source / "page").stat().st_mtime_ns
    with open(source / "page", "r+b") as handle:  # same size, and the same time, as a coarse clock may give
        handle.write(b"b" * 8192)
    os.utime(source / "page", ns=(stamp, stamp))
    store.clone(source, clone, EarlierClone(earlier, taken_at))
    assert (clone / "page").read_bytes() == b"b" * 8192
    assert (earlier / "page").read_bytes() == b"a" * 8192


def test_appending_to_a_large_file_is_isolated(store: SnapshotStore) -> None:
    source, clone = store.root / "source", store.root / "clone"
    store.create(source)
    big = source / "big"
    write_random(big, 16 * MiB)
    original = sha(big)
    store.clone(source, clone)
    with open(clone / "big", "ab") as handle:
        handle.write(os.urandom(3 * MiB + 123))
    with open(big, "r+b") as handle:
        handle.seek(8 * MiB)
        handle.write(os.urandom(8192))
    assert (clone / "big").stat().st_size == 19 * MiB + 123
    assert big.stat().st_size == 16 * MiB
    assert sha(big) != original
    with open(clone / "big", "rb") as handle:
        handle.seek(8 * MiB)
        clone_page = handle.read(8192)
    with open(big, "rb") as handle:
        handle.seek(8 * MiB)
        assert handle.read(8192) != clone_page


def test_volumes_can_be_renamed_within_the_root(store: SnapshotStore) -> None:
    """The services commit a state by cloning to a temporary name and renaming it into place."""
    source = store.root / "scratch" / "s1"
    (store.root / "scratch").mkdir()
    (store.root / "states").mkdir()
    make_pgdata_like(store, source)
    temporary, final = store.root / "tmp" / "state.1234", store.root / "states" / "state"
    store.clone(source, temporary)  # creates the missing parent "tmp"
    os.rename(temporary, final)
    expected = tree(source)
    assert tree(final) == expected
    store.clone(final, store.root / "instances" / "i1")
    assert tree(store.root / "instances" / "i1") == expected
    store.delete(source)
    store.delete(final)
    assert tree(store.root / "instances" / "i1") == expected


def test_sync_flushes_a_volume_that_is_then_renamed_into_place(store: SnapshotStore) -> None:
    """The services call `sync` on every new volume before its commit rename."""
    temporary, final = store.root / "tmp" / "v.1", store.root / "states" / "v"
    (store.root / "tmp").mkdir()
    (store.root / "states").mkdir()
    store.create(temporary)
    write_file(temporary / "PG_VERSION", b"16\n")
    store.sync(temporary)
    os.rename(temporary, final)
    assert (final / "PG_VERSION").read_bytes() == b"16\n"


def test_clone_onto_an_existing_target_fails_and_leaves_it_untouched(store: SnapshotStore) -> None:
    source, target, file_target = store.root / "source", store.root / "target", store.root / "file"
    make_pgdata_like(store, source)
    store.create(target)
    write_file(target / "marker", b"keep me")
    file_target.write_bytes(b"a file")
    before = tree(target)
    with pytest.raises(StoreFailure, match="exists"):
        store.clone(source, target)
    assert tree(target) == before
    with pytest.raises(StoreFailure, match="exists"):
        store.clone(source, file_target)
    assert file_target.read_bytes() == b"a file"


def test_clone_of_a_missing_source_fails_and_leaves_nothing(store: SnapshotStore) -> None:
    target = store.root / "target"
    with pytest.raises(StoreFailure):
        store.clone(store.root / "missing", target)
    assert not os.path.lexists(target)


def test_paths_outside_the_root_are_refused(store: SnapshotStore) -> None:
    outside = Path(tempfile.mkdtemp(prefix="outside-", dir=store.root.parent))
    try:
        (outside / "keep").write_bytes(b"x")
        source = store.root / "source"
        store.create(source)
        for action in (
            lambda: store.delete(outside),
            lambda: store.delete(store.root),
            lambda: store.delete(store.root / ".."),
            lambda: store.create(outside / "v"),
            lambda: store.clone(source, outside / "clone"),
        ):
            with pytest.raises(StoreFailure, match="not below the store root"):
                action()
        assert (outside / "keep").exists()
        assert not (outside / "v").exists()
        assert not (outside / "clone").exists()
    finally:
        shutil.rmtree(outside)


# --- delete ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["source", "clone"])
def test_deleting_either_side_leaves_the_other_intact(store: SnapshotStore, first: str) -> None:
    source, clone = store.root / "source", store.root / "clone"
    make_pgdata_like(store, source)
    expected = tree(source)
    store.clone(source, clone)
    gone, kept = (source, clone) if first == "source" else (clone, source)
    store.delete(gone)
    assert not os.path.lexists(gone)
    assert tree(kept) == expected


def test_chains_of_clones_survive_deleting_the_middle(store: SnapshotStore) -> None:
    a, b, c = store.root / "a", store.root / "b", store.root / "c"
    make_pgdata_like(store, a)
    expected = tree(a)
    store.clone(a, b)
    write_file(b / "only-in-b-and-c", b"bc")
    store.clone(b, c)
    store.delete(b)
    assert tree(a) == expected
    assert (c / "only-in-b-and-c").read_bytes() == b"bc"
    store.delete(a)
    assert (c / "base/1/1259").stat().st_size == 8192 * 12


def test_delete_is_idempotent(store: SnapshotStore) -> None:
    volume = store.root / "v"
    store.delete(volume)  # never existed
    make_pgdata_like(store, volume)
    store.delete(volume)
    assert not os.path.lexists(volume)
    store.delete(volume)


def test_delete_removes_nested_and_read_only_directories(store: SnapshotStore) -> None:
    volume = store.root / "v"
    store.create(volume)
    deep = volume / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    write_file(deep / "f", b"x", mode=0o400)
    for path in (deep, deep.parent, volume / "a"):
        os.chmod(path, 0o500)
    store.delete(volume)
    assert not os.path.lexists(volume)


def test_crash_leftovers_are_deleted(store: SnapshotStore) -> None:
    """A half-made clone left behind by a crash (a volume or a bare directory) is removable,
    and the name can be used again."""
    source = store.root / "source"
    make_pgdata_like(store, source)
    leftover_volume, leftover_dir = store.root / "tmp-volume", store.root / "tmp-dir"
    store.create(leftover_volume)
    shutil.copytree(source / "base", leftover_volume / "base", symlinks=True)
    leftover_dir.mkdir()
    (leftover_dir / "global").mkdir()
    write_file(leftover_dir / "global/pg_control", b"partial")
    if store.backend == "btrfs":  # nested subvolumes, made with the btrfs tool itself
        subprocess.run(["btrfs", "subvolume", "create", str(leftover_volume / "nested")], check=True)
        write_file(leftover_volume / "nested/f", b"nested")
        subprocess.run(["btrfs", "subvolume", "create", str(leftover_dir / "global/sub")], check=True)
    for leftover in (leftover_volume, leftover_dir):
        store.delete(leftover)
        assert not os.path.lexists(leftover)
        store.clone(source, leftover)
        assert tree(leftover) == tree(source)
    if store.backend == "btrfs":
        listing = subprocess.run(
            ["btrfs", "subvolume", "list", "-o", str(store.root)], capture_output=True, text=True
        ).stdout
        assert "nested" not in listing
        assert "global/sub" not in listing


def test_delete_refuses_a_volume_with_a_mount_inside(store: SnapshotStore) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    volume = store.root / "v"
    store.create(volume)
    (volume / "mnt").mkdir()
    elsewhere = Path(tempfile.mkdtemp(prefix="bind-", dir="/tmp"))
    (elsewhere / "precious").write_bytes(b"x")
    subprocess.run(["mount", "--bind", str(elsewhere), str(volume / "mnt")], check=True)
    try:
        with pytest.raises(StoreFailure, match="mounted"):
            store.delete(volume)
        assert (elsewhere / "precious").exists()
    finally:
        subprocess.run(["umount", str(volume / "mnt")], check=True)
        shutil.rmtree(elsewhere)
    store.delete(volume)


# --- space accounting ------------------------------------------------------------------------


def test_allocated_bytes_of_a_64_mib_volume(store: SnapshotStore) -> None:
    volume = store.root / "v"
    store.create(volume)
    write_random(volume / "data", 64 * MiB)
    settle(store)
    allocated = store.allocated_bytes([volume])
    assert 64 * MiB <= allocated <= 64 * MiB * 1.05 + MiB, allocated


def test_allocated_bytes_counts_shared_extents_once(store: SnapshotStore) -> None:
    source, clone = store.root / "source", store.root / "clone"
    store.create(source)
    write_random(source / "data", 64 * MiB)
    settle(store)
    single = store.allocated_bytes([source])
    store.clone(source, clone)
    settle(store)
    both = store.allocated_bytes([source, clone])
    assert store.allocated_bytes([clone]) >= 64 * MiB  # a clone alone still holds its data
    assert store.allocated_bytes([source, source]) == single  # a path twice counts once
    if store.backend == "copy":
        assert 1.9 * single <= both <= 2.1 * single, (single, both)
        return
    assert both < 1.2 * single, (single, both)
    with open(clone / "data", "r+b") as handle:  # copy-on-write of 16 MiB
        handle.seek(16 * MiB)
        handle.write(os.urandom(16 * MiB))
        handle.flush()
        os.fsync(handle.fileno())
    settle(store)
    grown = store.allocated_bytes([source, clone])
    assert 14 * MiB <= grown - both <= 20 * MiB, (both, grown)


def test_free_bytes_drops_after_writing(store: SnapshotStore) -> None:
    volume = store.root / "v"
    store.create(volume)
    drops = []
    for attempt in range(3):  # a plain directory shares its filesystem with other busy processes
        settle(store)
        before = store.free_bytes()
        assert before > 0
        write_random(volume / f"data{attempt}", 64 * MiB)
        settle(store)
        drops.append(before - store.free_bytes())
        if drops[-1] >= 48 * MiB:
            break
    assert drops[-1] >= 48 * MiB, drops


def test_free_bytes_recovers_after_delete_and_settle(store: SnapshotStore) -> None:
    """`settle()` makes deletes show in `free_bytes()`, which eviction relies on; btrfs frees
    deleted subvolumes asynchronously. `total_bytes()` bounds both."""
    settle_store = store.settle
    assert store.total_bytes() > store.free_bytes() > 0
    gains = []
    for attempt in range(3):  # a plain directory shares its filesystem with other busy processes
        source, clone = store.root / f"source{attempt}", store.root / f"clone{attempt}"
        store.create(source)
        write_random(source / "data", 64 * MiB)
        store.clone(source, clone)
        settle_store()
        before = store.free_bytes()
        store.delete(source)
        store.delete(clone)
        settle_store()
        gains.append(store.free_bytes() - before)
        if gains[-1] >= 48 * MiB:
            break
    assert gains[-1] >= 48 * MiB, gains


def test_clone_out_of_space_raises_nospace_and_leaves_nothing(request: pytest.FixtureRequest) -> None:
    """A real ENOSPC: full copies on a nearly full XFS volume."""
    base = volume_for(request, "reflink")
    root = Path(tempfile.mkdtemp(prefix="nospace-", dir=base))
    store = CopyStore(root)
    source, target, filler = root / "source", root / "target", root / "filler"
    try:
        store.create(source)
        write_random(source / "data", 48 * MiB)
        free = store.free_bytes()
        with open(filler, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, free - 16 * MiB)
        with pytest.raises(NoSpace):
            store.clone(source, target)
        assert not os.path.lexists(target)
    finally:
        filler.unlink(missing_ok=True)
        store.delete(source)
        store.delete(target)
        root.rmdir()


# --- probing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_picks_the_best_backend_of_the_filesystem(request: pytest.FixtureRequest, backend: str) -> None:
    base = volume_for(request, backend)
    if backend == "copy" and _fs.fs_name(base) in ("btrfs", "xfs"):
        pytest.skip(f"the plain temporary directory is on {_fs.fs_name(base)}, which may reflink")
    root = base / "auto-store"
    try:
        probes = probe_backends(root)
        assert [name for name, _ok, _reason in probes] == list(BACKENDS)
        assert all(reason for _name, _ok, reason in probes)
        assert {name for name, ok, _reason in probes if ok} == set(BACKENDS[BACKENDS.index(backend) :])
        assert open_store(root).backend == backend
        assert list(root.iterdir()) == []  # probes leave nothing behind
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("where", "requested"), [("copy", "btrfs"), ("copy", "reflink"), ("reflink", "btrfs")])
def test_requesting_a_backend_the_filesystem_lacks_fails(
    request: pytest.FixtureRequest, where: str, requested: str
) -> None:
    base = volume_for(request, where)
    if where == "copy" and _fs.fs_name(base) in ("btrfs", "xfs"):
        pytest.skip(f"the plain temporary directory is on {_fs.fs_name(base)}")
    with pytest.raises(StoreFailure) as info:
        open_store(base / "requested", requested)
    assert "\n" not in info.value.message
    assert requested in info.value.message
    assert info.value.hint
    shutil.rmtree(base / "requested", ignore_errors=True)


def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        open_store(tmp_path, "overlayfs")


# --- loop volumes ----------------------------------------------------------------------------


def _attached(image: Path) -> bool:
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().removesuffix(" (deleted)") == str(image):
                return True
    return False


@pytest.mark.parametrize("fs", ["btrfs", "xfs"])
def test_loop_volume_lifecycle(scratch: Path, fs: str) -> None:
    backend = BACKEND_OF_FS[fs]
    if os.geteuid() != 0:
        unavailable(backend, "loop volumes need root")
    workdir = Path(tempfile.mkdtemp(prefix=f"loop-{fs}-", dir=scratch))
    image, mountpoint = workdir / "images" / "store.img", workdir / "mnt"
    try:
        try:
            create_loop_volume(image, mountpoint, fs, 400 * MiB)
        except StoreFailure as exc:
            unavailable(backend, exc.message)
        assert mounted_image(mountpoint) == (fs, str(image))
        assert image.stat().st_blocks * 512 < 200 * MiB  # sparse
        assert (stat.S_IMODE(image.stat().st_mode)) == 0o600
        assert open_store(mountpoint / "store").backend == backend
        (mountpoint / "kept").write_bytes(b"across mounts")
        assert ensure_mounted(image, mountpoint, fs) is False

        unmount(mountpoint)
        assert mounted_image(mountpoint) is None
        assert not _attached(image)  # the loop device went away with the mount
        unmount(mountpoint)  # idempotent

        assert ensure_mounted(image, mountpoint, fs) is True  # e.g. after a reboot
        assert (mountpoint / "kept").read_bytes() == b"across mounts"
        assert ensure_mounted(image, mountpoint, fs) is False
        other = "xfs" if fs == "btrfs" else "btrfs"
        with pytest.raises(StoreFailure):
            ensure_mounted(image, mountpoint, other)
        with pytest.raises(StoreFailure, match="already exists"):
            create_loop_volume(image, workdir / "mnt2", fs, 400 * MiB)
    finally:
        unmount(mountpoint)
        shutil.rmtree(workdir)
    assert not _attached(image)


def test_create_loop_volume_checks_before_creating_anything(scratch: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    workdir = Path(tempfile.mkdtemp(prefix="loop-checks-", dir=scratch))
    image, mountpoint = workdir / "new" / "store.img", workdir / "mnt"
    try:
        st = os.statvfs(workdir)
        too_big = st.f_bavail * st.f_frsize + (1 << 40)
        with pytest.raises(StoreFailure, match="not enough free space") as info:
            create_loop_volume(image, mountpoint, "btrfs", too_big)
        assert info.value.hint
        with pytest.raises(UsageError, match="at least"):
            create_loop_volume(image, mountpoint, "xfs", 64 * MiB)
        with pytest.raises(UsageError, match="unsupported"):
            create_loop_volume(image, mountpoint, "ext4", 1 << 30)
        assert not os.path.lexists(image.parent)
        assert not os.path.lexists(mountpoint)

        mountpoint.mkdir()
        (mountpoint / "occupied").write_bytes(b"x")
        with pytest.raises(StoreFailure, match="not empty"):
            create_loop_volume(image, mountpoint, "btrfs", 400 * MiB)
        assert not os.path.lexists(image)
        assert (mountpoint / "occupied").exists()

        with pytest.raises(StoreFailure, match="missing"):
            ensure_mounted(workdir / "nope.img", workdir / "mnt3", "btrfs")
    finally:
        shutil.rmtree(workdir)


def _in_child_as_nobody(func: Callable[[], None]) -> str:
    """Run `func` in a forked child with uid/gid 65534; the StoreFailure message or an error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        message = "no error"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            func()
        except StoreFailure as exc:
            message = f"StoreFailure: {exc.message} | {exc.hint}"
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_fd, message.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def test_loop_volumes_need_root(scratch: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs as root and drops privileges in a child")
    image, mountpoint = scratch / "nobody.img", scratch / "nobody-mnt"
    result = _in_child_as_nobody(lambda: create_loop_volume(image, mountpoint, "btrfs", 400 * MiB))
    assert result.startswith("StoreFailure: creating a loop volume needs root"), result
    assert "sudo" in result
    assert not os.path.lexists(image)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10G", 10 << 30),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("2GiB", 2 << 30),
        ("1.5T", int(1.5 * (1 << 40))),
        ("100MB", 100_000_000),
        ("4096", 4096),
        (1024, 1024),
    ],
)
def test_parse_volume_size(text: str | int, expected: int) -> None:
    assert parse_volume_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "ten", "10X", "-1G", "0", "10GBB"])
def test_parse_volume_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError):
        parse_volume_size(text)
