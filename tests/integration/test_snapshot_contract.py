"""The SnapshotStore contract (sqlrs/ports/snapshots.py; the suite is sqlrs.testing.snapshots), run
unchanged against every backend on a real filesystem, and what sqlrs' own stores do beyond it:

- btrfs   on a loop-mounted btrfs volume,
- reflink on a loop-mounted XFS volume made with `mkfs.xfs -m reflink=1`,
- copy    on a plain temporary directory (ext4 here),
- fake    the service tests' store (tests/fakes.py) on a plain directory.

The loop volumes are made by sqlrs's own `create_loop_volume` once per session under /tmp and
are unmounted and deleted at the end, also when tests fail. A backend that cannot be set up
here (not root, no mkfs tool, no loop devices) skips its tests with the reason, unless it is
named in `SQLRS_REQUIRE` (comma list, e.g. `btrfs,reflink`): then its tests fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeSnapshotStore

from sqlrs.adapters.snapshots import _fs, open_store, probe_backends
from sqlrs.adapters.snapshots.copy import CopyStore
from sqlrs.adapters.snapshots.loopvolume import (
    create_loop_volume,
    ensure_mounted,
    mounted_image,
    parse_volume_size,
    unmount,
)
from sqlrs.domain.errors import NoSpace, StoreFailure, UsageError
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.testing.require import unavailable
from sqlrs.testing.snapshots import MiB, SnapshotStoreContract, write_file, write_random

BACKENDS = ("btrfs", "reflink", "copy")  # sqlrs' own stores, best first (their registered priorities)
VOLUME_SIZE = 1536 * MiB  # sparse: costs only what the tests write
BACKEND_OF_FS = {"btrfs": "btrfs", "xfs": "reflink"}


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


class TestSnapshotStoreContract(SnapshotStoreContract):
    @pytest.fixture(params=[*(pytest.param(name, marks=pytest.mark.backend(name)) for name in BACKENDS), "fake"])
    def store(self, request: pytest.FixtureRequest) -> Iterator[SnapshotStore]:
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

    def check_shared_with_earlier(self, store: SnapshotStore, earlier: Path, clone: Path) -> None:
        if store.backend == "copy":  # hard links of the files unchanged since the earlier clone, only those
            same = {rel for rel in ("PG_VERSION", "base/5/16384_fsm", "global/pg_control", "postgresql.conf")
                    if (clone / rel).stat().st_ino == (earlier / rel).stat().st_ino}
            assert same == {"PG_VERSION", "base/5/16384_fsm", "global/pg_control", "postgresql.conf"}
            assert (clone / "base/1/1259").stat().st_ino != (earlier / "base/1/1259").stat().st_ino

    def add_crash_leftovers(self, store: SnapshotStore, volume: Path, directory: Path) -> None:
        if store.backend == "btrfs":  # nested subvolumes, made with the btrfs tool itself
            subprocess.run(["btrfs", "subvolume", "create", str(volume / "nested")], check=True)
            write_file(volume / "nested/f", b"nested")
            subprocess.run(["btrfs", "subvolume", "create", str(directory / "global/sub")], check=True)

    def check_crash_leftovers_gone(self, store: SnapshotStore) -> None:
        if store.backend == "btrfs":
            listing = subprocess.run(
                ["btrfs", "subvolume", "list", "-o", str(store.root)], capture_output=True, text=True
            ).stdout
            assert "nested" not in listing
            assert "global/sub" not in listing

    def check_clone_space(self, store: SnapshotStore, source: Path, clone: Path, single: int, both: int) -> None:
        super().check_clone_space(store, source, clone, single, both)
        if store.backend == "copy":  # full copies, counted twice
            assert 1.9 * single <= both, (single, both)
        if store.backend == "fake":  # it copies, but counts space as a deduplicating filesystem would
            self.assert_shares_until_written(store, source, clone, single, both)


# --- sqlrs' own stores beyond the contract -----------------------------------------------------


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
