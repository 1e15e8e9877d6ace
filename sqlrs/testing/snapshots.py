"""The SnapshotStore contract (sqlrs/ports/snapshots.py) as a suite another package runs on its store.

Subclass `SnapshotStoreContract` in a test module (its name does not start with `Test`, so pytest
collects only the subclass) and give it a `store` fixture: a store on a fresh, empty root on the
filesystem it is meant for, emptied (`delete` of every entry) afterwards::

    import pytest
    from sqlrs.testing.snapshots import SnapshotStoreContract

    class TestMyStore(SnapshotStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            opened = MyStore(tmp_path / "store")
            yield opened
            for entry in list(opened.root.iterdir()):
                opened.delete(entry)

Real files, real clones: volumes shaped like PostgreSQL data directories (nested directories,
8 KiB pages, a symlink, a hard link, files of other owners), 64 MiB of random data for the space
accounting. Run as root (files of other users are made; bind mounts are tried). What a store
declares is held to: `copy_on_write` stores must share a clone's data with its source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sqlrs.domain.errors import StoreFailure
from sqlrs.ports.snapshots import EarlierClone, SnapshotStore

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


class SnapshotStoreContract:
    """The SnapshotStore port's promises, on a real filesystem."""

    def settle(self, store: SnapshotStore) -> None:
        """Flush, so that allocation and free space are what the filesystem will keep."""
        os.sync()
        store.settle()

    # hooks: what a subclass knows of its store beyond the port
    def check_shared_with_earlier(self, store: SnapshotStore, earlier: Path, clone: Path) -> None:
        """After `clone` was made like `earlier` (unchanged since: PG_VERSION, base/5/16384_fsm,
        global/pg_control, postgresql.conf; changed: base/1/1259): what the store shares."""

    def add_crash_leftovers(self, store: SnapshotStore, volume: Path, directory: Path) -> None:
        """Make the store's own kind of leftovers inside a half-made volume and directory."""

    def check_crash_leftovers_gone(self, store: SnapshotStore) -> None:
        """After the half-made volume and directory were deleted: nothing of them is left."""

    def check_clone_space(self, store: SnapshotStore, source: Path, clone: Path, single: int, both: int) -> None:
        """A 64 MiB volume `source` took `single` bytes, with its `clone` `both`."""
        if store.copy_on_write:
            self.assert_shares_until_written(store, source, clone, single, both)

    def assert_shares_until_written(self, store: SnapshotStore, source: Path, clone: Path, single: int,
                                    both: int) -> None:
        """A clone shares its source's data, and writing 16 MiB of it costs about that much more."""
        assert both < 1.2 * single, (single, both)
        with open(clone / "data", "r+b") as handle:  # copy-on-write of 16 MiB
            handle.seek(16 * MiB)
            handle.write(os.urandom(16 * MiB))
            handle.flush()
            os.fsync(handle.fileno())
        self.settle(store)
        grown = store.allocated_bytes([source, clone])
        assert 14 * MiB <= grown - both <= 20 * MiB, (both, grown)

    # --- create / clone --------------------------------------------------------------------------

    def test_create_makes_an_empty_private_writable_volume(self, store: SnapshotStore) -> None:
        volume = store.root / "v1"
        store.create(volume)
        assert volume.is_dir()
        assert list(volume.iterdir()) == []
        assert stat.S_IMODE(volume.stat().st_mode) == 0o700
        (volume / "f").write_bytes(b"ok")
        with pytest.raises(StoreFailure):
            store.create(volume)
        assert (volume / "f").read_bytes() == b"ok"

    def test_clone_preserves_content_ownership_and_modes(self, store: SnapshotStore) -> None:
        source, clone = store.root / "source", store.root / "clone"
        make_pgdata_like(store, source)
        before = tree(source)
        store.clone(source, clone)
        assert tree(clone) == before
        assert tree(source) == before
        st = clone.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, *OWNER)
        assert (clone / "PG_VERSION").stat().st_ino == (clone / "global/PG_VERSION.hardlink").stat().st_ino

    def test_clone_of_a_plain_directory(self, store: SnapshotStore) -> None:
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

    def test_writes_are_isolated_both_ways(self, store: SnapshotStore) -> None:
        source, clone = store.root / "source", store.root / "clone"
        make_pgdata_like(store, source)
        store.clone(source, clone)
        source_tree = tree(source)

        write_like_postgres(clone)
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
            self, store: SnapshotStore) -> None:
        """`earlier` (the last kept state of a build): the clone is the source whatever the store
        does with it (a copy store may share, e.g. hard-link, the files unchanged since)."""
        source, earlier, clone = store.root / "source", store.root / "earlier", store.root / "clone"
        make_pgdata_like(store, source)
        old = time.time() - 3600
        for dirpath, _dirs, files in os.walk(source):
            for name in files:
                os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
        taken_at = time.time()
        store.clone(source, earlier)

        earlier_content = content(earlier)
        write_like_postgres(source)
        store.clone(source, clone, EarlierClone(earlier, taken_at))
        assert content(clone) == content(source)
        assert content(earlier) == earlier_content
        self.check_shared_with_earlier(store, earlier, clone)
        # the source goes on being written: neither clone sees it
        clone_content = content(clone)
        with open(source / "global/pg_control", "r+b") as handle:
            handle.write(b"\x00" * 512)
        assert content(clone) == clone_content and content(earlier) == earlier_content

    def test_files_written_just_before_the_earlier_clone_are_never_shared(self, store: SnapshotStore) -> None:
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

    def test_appending_to_a_large_file_is_isolated(self, store: SnapshotStore) -> None:
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

    def test_volumes_can_be_renamed_within_the_root(self, store: SnapshotStore) -> None:
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

    def test_sync_flushes_a_volume_that_is_then_renamed_into_place(self, store: SnapshotStore) -> None:
        """The services call `sync` on every new volume before its commit rename."""
        temporary, final = store.root / "tmp" / "v.1", store.root / "states" / "v"
        (store.root / "tmp").mkdir()
        (store.root / "states").mkdir()
        store.create(temporary)
        write_file(temporary / "PG_VERSION", b"16\n")
        store.sync(temporary)
        os.rename(temporary, final)
        assert (final / "PG_VERSION").read_bytes() == b"16\n"

    def test_clone_onto_an_existing_target_fails_and_leaves_it_untouched(self, store: SnapshotStore) -> None:
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

    def test_clone_of_a_missing_source_fails_and_leaves_nothing(self, store: SnapshotStore) -> None:
        target = store.root / "target"
        with pytest.raises(StoreFailure):
            store.clone(store.root / "missing", target)
        assert not os.path.lexists(target)

    def test_paths_outside_the_root_are_refused(self, store: SnapshotStore) -> None:
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
    def test_deleting_either_side_leaves_the_other_intact(self, store: SnapshotStore, first: str) -> None:
        source, clone = store.root / "source", store.root / "clone"
        make_pgdata_like(store, source)
        expected = tree(source)
        store.clone(source, clone)
        gone, kept = (source, clone) if first == "source" else (clone, source)
        store.delete(gone)
        assert not os.path.lexists(gone)
        assert tree(kept) == expected

    def test_chains_of_clones_survive_deleting_the_middle(self, store: SnapshotStore) -> None:
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

    def test_delete_is_idempotent(self, store: SnapshotStore) -> None:
        volume = store.root / "v"
        store.delete(volume)  # never existed
        make_pgdata_like(store, volume)
        store.delete(volume)
        assert not os.path.lexists(volume)
        store.delete(volume)

    def test_delete_removes_nested_and_read_only_directories(self, store: SnapshotStore) -> None:
        volume = store.root / "v"
        store.create(volume)
        deep = volume / "a" / "b" / "c" / "d"
        deep.mkdir(parents=True)
        write_file(deep / "f", b"x", mode=0o400)
        for path in (deep, deep.parent, volume / "a"):
            os.chmod(path, 0o500)
        store.delete(volume)
        assert not os.path.lexists(volume)

    def test_crash_leftovers_are_deleted(self, store: SnapshotStore) -> None:
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
        self.add_crash_leftovers(store, leftover_volume, leftover_dir)
        for leftover in (leftover_volume, leftover_dir):
            store.delete(leftover)
            assert not os.path.lexists(leftover)
            store.clone(source, leftover)
            assert tree(leftover) == tree(source)
        self.check_crash_leftovers_gone(store)

    def test_delete_refuses_a_volume_with_a_mount_inside(self, store: SnapshotStore) -> None:
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

    def test_allocated_bytes_of_a_64_mib_volume(self, store: SnapshotStore) -> None:
        volume = store.root / "v"
        store.create(volume)
        write_random(volume / "data", 64 * MiB)
        self.settle(store)
        allocated = store.allocated_bytes([volume])
        assert 64 * MiB <= allocated <= 64 * MiB * 1.05 + MiB, allocated

    def test_allocated_bytes_counts_shared_extents_once(self, store: SnapshotStore) -> None:
        source, clone = store.root / "source", store.root / "clone"
        store.create(source)
        write_random(source / "data", 64 * MiB)
        self.settle(store)
        single = store.allocated_bytes([source])
        store.clone(source, clone)
        self.settle(store)
        both = store.allocated_bytes([source, clone])
        assert store.allocated_bytes([clone]) >= 64 * MiB  # a clone alone still holds its data
        assert store.allocated_bytes([source, source]) == single  # a path twice counts once
        assert both <= 2.1 * single, (single, both)  # never more than two copies
        self.check_clone_space(store, source, clone, single, both)

    def test_free_bytes_drops_after_writing(self, store: SnapshotStore) -> None:
        volume = store.root / "v"
        store.create(volume)
        drops = []
        for attempt in range(3):  # a plain directory shares its filesystem with other busy processes
            self.settle(store)
            before = store.free_bytes()
            assert before > 0
            write_random(volume / f"data{attempt}", 64 * MiB)
            self.settle(store)
            drops.append(before - store.free_bytes())
            if drops[-1] >= 48 * MiB:
                break
        assert drops[-1] >= 48 * MiB, drops

    def test_free_bytes_recovers_after_delete_and_settle(self, store: SnapshotStore) -> None:
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


