"""Loopback volumes for the snapshot store (`sqlrs init local --snapshot btrfs|reflink`).

A sparse image file is formatted as btrfs or as XFS with reflink and mounted with `-o loop`
(util-linux sets LO_FLAGS_AUTOCLEAR, so unmounting also frees the loop device). Mount options:
`noatime` (reads must not dirty metadata shared between snapshots) and `discard` (deleted
blocks are punched out of the sparse image, so the host gets its space back). All of this
needs root; the engine re-mounts with `ensure_mounted` after a reboot.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlrs.adapters.snapshots import _fs
from sqlrs.domain.errors import StoreFailure, UsageError
from sqlrs.domain.sizes import format_size, parse_size

FILESYSTEMS = ("btrfs", "xfs")
MKFS = {
    "btrfs": ("mkfs.btrfs", "btrfs-progs"),
    "xfs": ("mkfs.xfs", "xfsprogs"),
}
# Smallest images mkfs accepts (btrfs-progs 6.2: ~114 MiB; xfsprogs >= 5.19: 300 MB).
MIN_SIZE = {"btrfs": 128 << 20, "xfs": 320 << 20}
MOUNT_OPTIONS = {"btrfs": "loop,noatime,discard=async", "xfs": "loop,noatime,discard"}
LABEL = "sqlrs"

def parse_volume_size(text: str | int) -> int:
    """A volume size (`10G`, `512M`, `100MB`, a byte count; units as in `sqlrs.domain.sizes`).

    Raises UsageError for anything else or for zero.
    """
    try:
        value = parse_size(text)
    except ValueError:
        raise UsageError(f"invalid size {text!r}", hint="use a number with a unit, e.g. 10G or 512M "
                         "(K/M/G/T and KiB/MiB/GiB/TiB: powers of 1024; KB/MB/GB/TB: powers of 1000)") from None
    if value <= 0:
        raise UsageError(f"invalid size {text!r}: must be larger than zero")
    return value


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise StoreFailure(
            f"{action} needs root (loop devices and mount)",
            hint="run the command with sudo, or use --snapshot auto (reflink/copy need no root)",
        )


def _require_fs(fs: str) -> None:
    if fs not in FILESYSTEMS:
        raise UsageError(f"unsupported loop volume filesystem {fs!r}", hint="use btrfs or xfs")


def _tool(name: str, package: str) -> str:
    path = _fs.find_tool(name)
    if path is None:
        raise StoreFailure(f"{name} not found", hint=f"apt install {package} (dnf install {package})")
    return path


def _backing_file(source: str) -> str | None:
    """The image behind a /dev/loopN mount source, from sysfs."""
    name = os.path.basename(source)
    if not name.startswith("loop"):
        return None
    try:
        backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None
    return backing.removesuffix(" (deleted)")


def mounted_image(mountpoint: Path) -> tuple[str, str] | None:
    """(fstype, source) of what is mounted at `mountpoint`, or None. For a loop device the
    source is its backing image file, otherwise the mount source as the kernel shows it."""
    entry = _fs.find_mount(mountpoint)
    if entry is None:
        return None
    return entry.fstype, _backing_file(entry.source) or entry.source


def _mount(image: Path, mountpoint: Path, fs: str) -> None:
    mount = _tool("mount", "mount")
    _fs.run(
        [mount, "-t", fs, "-o", MOUNT_OPTIONS[fs], str(image), str(mountpoint)],
        f"cannot mount {image} on {mountpoint}",
        hint="check `dmesg | tail` and that loop devices are available (modprobe loop)",
    )


def _check_mountpoint(mountpoint: Path) -> None:
    if mountpoint.exists() and not mountpoint.is_dir():
        raise StoreFailure(f"cannot mount on {mountpoint}: not a directory")
    mountpoint.mkdir(parents=True, exist_ok=True)
    if any(mountpoint.iterdir()):
        raise StoreFailure(
            f"cannot mount on {mountpoint}: the directory is not empty",
            hint="move its content away or choose another store location",
        )


def preflight(image: Path, mountpoint: Path, fs: str, size_bytes: int, replacing: bool = False) -> None:
    """Every check `create_loop_volume` makes before touching anything, in its order: the
    filesystem name, root, the mkfs and mount tools, the minimum size, a new image path, a free
    mountpoint, and that the host filesystem has `size_bytes` free (the image is sparse but may
    grow to that). With `replacing`, an existing image at `image` and a volume mounted on
    `mountpoint` are about to be removed: they are no obstacle and the image's space counts as
    free. Raises UsageError or StoreFailure with a one-line message and a hint."""
    _require_fs(fs)
    image, mountpoint = Path(os.path.abspath(image)), Path(os.path.abspath(mountpoint))
    _require_root("creating a loop volume")
    tool, package = MKFS[fs]
    _tool(tool, package)
    _tool("mount", "mount")
    if size_bytes < MIN_SIZE[fs]:
        raise UsageError(
            f"a {fs} volume needs at least {format_size(MIN_SIZE[fs])}, got {format_size(size_bytes)}",
            hint="choose a larger --store-size, e.g. 10G",
        )
    reclaimable = 0
    if os.path.lexists(image):
        if not replacing:
            raise StoreFailure(
                f"cannot create loop volume: {image} already exists",
                hint="remove it, or mount the existing volume (sqlrs re-mounts it on start)",
            )
        with contextlib.suppress(OSError):
            reclaimable = os.lstat(image).st_blocks * 512
    if not replacing and _fs.find_mount(mountpoint) is not None:
        raise StoreFailure(f"cannot mount on {mountpoint}: something is already mounted there")
    existing = image.parent
    while not existing.exists():
        existing = existing.parent
    st = os.statvfs(existing)
    free = st.f_bavail * st.f_frsize + reclaimable
    if free < size_bytes:
        raise StoreFailure(
            f"not enough free space for a {format_size(size_bytes)} volume at {image.parent}: {format_size(free)} free",
            hint="choose a smaller --store-size or put the image on another disk",
        )


def create_loop_volume(image: Path, mountpoint: Path, fs: str, size_bytes: int) -> None:
    """Create a sparse `size_bytes` image, format it as `fs` (btrfs, or XFS with reflink=1)
    and mount it on `mountpoint` (created if missing, must be empty).

    Checks before touching anything (`preflight`): root, the mkfs tool, the filesystem name, a
    free mountpoint, a new image path, and that the host filesystem has `size_bytes` free. On
    failure nothing is left behind.
    """
    preflight(image, mountpoint, fs, size_bytes)
    image, mountpoint = Path(os.path.abspath(image)), Path(os.path.abspath(mountpoint))
    tool, package = MKFS[fs]
    mkfs = _tool(tool, package)
    created_mountpoint = not mountpoint.exists()
    _check_mountpoint(mountpoint)
    try:
        image.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size_bytes)
        finally:
            os.close(fd)
        if fs == "btrfs":
            argv = [mkfs, "-q", "-L", LABEL, str(image)]
        else:
            argv = [mkfs, "-q", "-m", "reflink=1", "-L", LABEL, str(image)]
        _fs.run(argv, f"{tool} {image} failed")
        _mount(image, mountpoint, fs)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        if created_mountpoint:
            with contextlib.suppress(OSError):
                mountpoint.rmdir()
        raise


def ensure_mounted(image: Path, mountpoint: Path, fs: str) -> bool:
    """Mount `image` on `mountpoint` unless it already is (e.g. after a reboot).

    Returns True when it mounted the volume now, False when it was already mounted. Raises
    StoreFailure when something else is mounted there, the image is missing, or not root.
    """
    _require_fs(fs)
    image, mountpoint = Path(os.path.abspath(image)), Path(os.path.abspath(mountpoint))
    current = mounted_image(mountpoint)
    if current is not None:
        fstype, source = current
        if fstype != fs or os.path.realpath(source) != os.path.realpath(image):
            raise StoreFailure(
                f"{mountpoint} has {source} ({fstype}) mounted, not the {fs} volume {image}",
                hint=f"unmount it (umount {mountpoint}) or fix the store location",
            )
        return False
    if not image.is_file():
        raise StoreFailure(
            f"the store volume image {image} is missing",
            hint="recreate the store with `sqlrs init local --snapshot ...`",
        )
    _require_root("mounting the store volume")
    _check_mountpoint(mountpoint)
    _mount(image, mountpoint, fs)
    return True


def unmount(mountpoint: Path) -> None:
    """Unmount the volume at `mountpoint` (its loop device is freed too). Idempotent."""
    mountpoint = Path(os.path.abspath(mountpoint))
    if _fs.find_mount(mountpoint) is None:
        return
    _require_root("unmounting the store volume")
    umount = _tool("umount", "mount")
    _fs.run(
        [umount, str(mountpoint)],
        f"cannot unmount {mountpoint}",
        hint=f"stop what still uses it (fuser -vm {mountpoint}) and retry",
    )
