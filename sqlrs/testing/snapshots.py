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

The suite is put together from `snapshot_hooks.py` (what a subclass may override),
`snapshot_space.py` (deletes and space accounting) and the creates and clones here; the files it
writes come from `snapshot_files.py`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from sqlrs.domain.errors import StoreFailure
from sqlrs.ports.snapshots import EarlierClone, SnapshotStore
from sqlrs.testing.snapshot_files import (
    OWNER,
    PG_OWNER,
    MiB,
    content,
    make_pgdata_like,
    sha,
    tree,
    walk_entries,
    write_file,
    write_like_postgres,
    write_random,
)
from sqlrs.testing.snapshot_hooks import SnapshotStoreHooks
from sqlrs.testing.snapshot_space import DeleteAndSpaceContract

# the suite, and the file helpers a subclass's hooks write and compare volumes with
__all__ = [
    "OWNER", "PG_OWNER", "MiB", "SnapshotStoreContract", "SnapshotStoreHooks", "content", "make_pgdata_like",
    "sha", "tree", "walk_entries", "write_file", "write_like_postgres", "write_random",
]


class SnapshotStoreContract(DeleteAndSpaceContract):
    """The SnapshotStore port's promises, on a real filesystem."""

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
