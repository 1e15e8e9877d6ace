"""`sqlrs init local`: loop volumes for the store, recorded backends, and its errors (docs/cli.md).

Errors must be one line plus a hint, exit 1 (or 2 for bad flags), no traceback, and leave
nothing behind (no image, no mount, no loop device). The loop volumes that are created are
unmounted and deleted at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _require import require
from harness import REPO, Sqlrs, processes_mentioning, psql, short_tmp, wait_until
from test_backends_e2e import attached_loops, native_available, volume_teardown

from sqlrs.adapters.pgfiles import pid_alive
from sqlrs.adapters.snapshots import _fs

NOBODY = 65534


@pytest.fixture
def sq() -> Iterator[Sqlrs]:
    """A fresh state dir, native runtime; whatever a test mounts there is unmounted at the end."""
    harness = Sqlrs(short_tmp(), runtime="native")
    try:
        yield harness
    finally:
        problems = volume_teardown(harness)
        assert not problems, f"left behind: {problems}"


def need_root(backend: str) -> None:
    if os.geteuid() != 0:
        require(backend, False, "needs root")


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, *texts: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("sqlrs: error: "), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 2, lines  # the message and its hint
    for text in texts:
        assert text in result.stderr, (text, result.stderr)


def assert_nothing_created(sq: Sqlrs) -> None:
    image = sq.state_dir / "store.img"
    assert not image.exists()
    assert _fs.mounts_below(sq.state_dir) == []
    assert attached_loops(image) == []
    config = sq.state_dir / "config.json"
    if config.exists():
        assert "store.volume.image" not in json.loads(config.read_text())


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["btrfs", "reflink"])
def test_without_root(sq: Sqlrs, backend: str) -> None:
    need_root(backend)  # to drop privileges
    os.chown(sq.state_dir, NOBODY, NOBODY)
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         sys.executable, "-m", "sqlrs", "init", "local", "--snapshot", backend],
        capture_output=True, text=True, env={**sq.env, "HOME": str(sq.state_dir)}, cwd="/", timeout=120,
        check=False,
    )
    assert_clean_failure(result, 1, "needs root", "sudo")
    assert_nothing_created(sq)


@pytest.mark.parametrize(("backend", "tool", "package"),
                         [("btrfs", "mkfs.btrfs", "btrfs-progs"), ("reflink", "mkfs.xfs", "xfsprogs")])
def test_without_mkfs(sq: Sqlrs, backend: str, tool: str, package: str) -> None:
    """PATH without the sbin directories, and the tool itself masked in a private mount namespace
    (sqlrs also looks in /usr/sbin and /sbin, which a non-login root shell may lack on PATH)."""
    need_root(backend)
    found = {os.path.realpath(p) for p in (shutil.which(tool), shutil.which(tool, path="/usr/sbin:/sbin")) if p}
    masks = " && ".join(f"mount --bind /dev/null {path}" for path in sorted(found)) or "true"
    script = f'{masks} && exec "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
         sys.executable, "-m", "sqlrs", "init", "local", "--snapshot", backend, "--store-size", "1G"],
        capture_output=True, text=True, env={**sq.env, "PATH": "/usr/bin:/bin"}, cwd=str(REPO), timeout=120,
        check=False,
    )
    assert_clean_failure(result, 1, f"{tool} not found", f"apt install {package}")
    assert_nothing_created(sq)


def test_larger_than_the_free_disk(sq: Sqlrs) -> None:
    need_root("btrfs")
    st = os.statvfs(sq.state_dir)
    too_big = st.f_bavail * st.f_frsize + (1 << 40)
    result = sq.run("init", "local", "--snapshot", "btrfs", "--store-size", str(too_big))
    assert_clean_failure(result, 1, "not enough free space", "--store-size")
    assert_nothing_created(sq)


def test_bad_flags_are_usage_errors(sq: Sqlrs) -> None:
    need_root("reflink")
    assert_clean_failure(sq.run("init", "local", "--snapshot", "btrfs", "--store-size", "10X"), 2, "invalid size")
    assert_clean_failure(sq.run("init", "local", "--snapshot", "reflink", "--store-size", "64M"), 2, "at least")
    assert_clean_failure(sq.run("init", "local", "--snapshot", "copy", "--store-size", "1G"), 2, "--store-size")
    bad = sq.run("init", "local", "--snapshot", "zfs")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert_nothing_created(sq)


# --- recording backends and runtimes -------------------------------------------------------------------


def test_copy_is_recorded_and_warned_about_loudly(sq: Sqlrs) -> None:
    available, reason = native_available()
    require("native", available, reason)
    if _fs.fs_name(sq.state_dir) in ("btrfs", "xfs"):
        pytest.skip("the temporary directory supports copy-on-write: auto would not fall back to copy")
    result = sq.run("init", "local", "--snapshot", "copy", "--runtime", "native")
    assert result.returncode == 0, result.stderr
    assert "snapshot backend: copy" in result.stdout
    config = json.loads((sq.state_dir / "config.json").read_text())
    assert config["snapshot.backend"] == "copy" and config["container.runtime"] == "native"

    status = sq.json("status")
    assert status["snapshot"]["backend"] == "copy"
    assert any("SLOW SNAPSHOTS" in w for w in status["warnings"]), status["warnings"]
    shown = sq.run("status")
    assert "WARNING:" in shown.stderr and "SLOW SNAPSHOTS" in shown.stderr

    # said where it matters (issue 22.3): a prepare that builds, or a hit that copies the state;
    # not on a hit that claims a warm instance, nor on ls or run:psql
    first = sq.run("prepare:psql", "--", "-c", "SELECT 1")  # the runtime comes from the config
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("WARNING: SLOW SNAPSHOTS") == 1, first.stderr
    assert wait_until(lambda: sq.json("status")["warm"]["instances"] >= 1, 120), sq.json("status")["warm"]
    second = sq.run("prepare:psql", "--", "-c", "SELECT 1")
    assert second.returncode == 0 and "SLOW SNAPSHOTS" not in second.stderr, second.stderr
    assert sq.instances()[0]["runtime"] == "native"
    for quiet in (("ls",), ("ls", "--states"), ("run:psql", "--instance", sq.instances()[0]["id"], "--", "-c",
                                                  "SELECT 1")):
        result = sq.run(*quiet)
        assert result.returncode == 0 and "SLOW" not in result.stderr + result.stdout, (quiet, result.stderr)
    assert sq.run("config", "set", "warm.enabled", "false").returncode == 0
    copied = sq.run("prepare:psql", "--", "-c", "SELECT 1")
    assert copied.returncode == 0 and copied.stderr.count("WARNING: SLOW SNAPSHOTS") == 1, copied.stderr
    assert "SLOW SNAPSHOTS" in sq.run("status").stderr

    # switching the backend restarts the engine on it (instances keep running)
    pid = sq.engine_pid()
    auto = sq.run("init", "local", "--snapshot", "auto")
    assert auto.returncode == 0, auto.stderr
    assert "uses copy here" in auto.stdout and "WARNING" in auto.stderr
    assert pid is not None and not pid_alive(pid)
    assert json.loads((sq.state_dir / "config.json").read_text())["snapshot.backend"] == "auto"
    assert sq.json("status")["snapshot"]["backend"] == "copy"
    assert all(i["status"] == "running" for i in sq.instances())


def test_a_store_with_states_is_replaced_only_with_force(sq: Sqlrs) -> None:
    available, reason = native_available()
    require("native", available, reason)
    need_root("btrfs")
    assert sq.run("init", "local", "--snapshot", "copy").returncode == 0
    dsn = sq.prepare("-c", "CREATE TABLE t AS SELECT 1 AS x")
    refused = sq.run("init", "local", "--snapshot", "btrfs", "--store-size", "1G")
    assert_clean_failure(refused, 1, "holds 2 states and 1 instance", "--force")
    assert_nothing_created(sq)
    assert psql(dsn, "SELECT x FROM t") == "1"  # untouched

    forced = sq.run("init", "local", "--snapshot", "btrfs", "--store-size", "1G", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "created" in forced.stdout
    store_root = sq.state_dir / "store"
    mounted = _fs.find_mount(store_root)
    assert mounted is not None and mounted.fstype == "btrfs"
    assert not [p for p in processes_mentioning(str(sq.state_dir)) if "postgres" in p[1]]
    assert sq.states() == [] and sq.instances() == []
    sq.prepare("-c", "CREATE TABLE t AS SELECT 2 AS x")
    assert sq.json("status")["snapshot"]["backend"] == "btrfs"

    # a btrfs volume replaced by an XFS one: same image path, the old loop device goes away
    old_loops = attached_loops(sq.state_dir / "store.img")
    assert len(old_loops) == 1
    xfs = sq.run("init", "local", "--snapshot", "reflink", "--store-size", "1G", "--force")
    assert xfs.returncode == 0, xfs.stderr
    mounted = _fs.find_mount(store_root)
    assert mounted is not None and mounted.fstype == "xfs"
    assert len(attached_loops(sq.state_dir / "store.img")) == 1
    config = json.loads((sq.state_dir / "config.json").read_text())
    assert config["store.volume.fs"] == "xfs" and config["snapshot.backend"] == "reflink"
    dsn = sq.prepare("-c", "CREATE TABLE t AS SELECT 3 AS x")
    assert psql(dsn, "SELECT x FROM t") == "3"
    assert sq.json("status")["snapshot"]["backend"] == "reflink"
