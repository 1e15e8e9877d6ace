"""What a snapshot store gives back, as part of the contract (sqlrs.testing.snapshots): deletes
(either side of a clone, chains, read-only trees, crash leftovers, never through a mount) and the
space accounting eviction relies on (allocated bytes, shared extents counted once, free space).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sqlrs.domain.errors import StoreFailure
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.testing.snapshot_files import (
    MiB,
    make_pgdata_like,
    tree,
    write_file,
    write_random,
)
from sqlrs.testing.snapshot_hooks import SnapshotStoreHooks


class DeleteAndSpaceContract(SnapshotStoreHooks):
    """The store's deletes and space accounting; SnapshotStoreContract includes them."""

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
        # a plain directory shares its filesystem with other busy processes (a test suite's other
        # workers write hundreds of MiB a second): one attempt whose window they left alone suffices
        for attempt in range(8):
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
        # a plain directory shares its filesystem with other busy processes (a test suite's other
        # workers write hundreds of MiB a second): one attempt whose window they left alone suffices
        for attempt in range(8):
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
        assert max(gains) >= 48 * MiB, gains
