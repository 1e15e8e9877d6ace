"""End to end on copy-on-write stores made by `sqlrs init local`.

Each test gets a fresh state directory whose store is a btrfs or an XFS (reflink=1) loop volume
created by the real CLI (`sqlrs init local --snapshot btrfs|reflink`), and drives the native
runtime through the CLI: the walking scenarios (Sakila golden, cache hit, rebuilding the last
step, rm leaves nothing), re-mounting after a "reboot", eviction under a cache cap and NoSpace.
The volume is unmounted and its image deleted at the end, also when a test fails.

`SQLRS_REQUIRE=btrfs,reflink` turns an unavailable backend (not root, no mkfs, no loop devices)
from a skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _require import require
from harness import (
    DATASETS,
    Sqlrs,
    check_rebuild_of_last_step,
    golden,
    processes_mentioning,
    psql,
    short_tmp,
    wait_for,
    write,
)

from sqlrs.adapters.snapshots import _fs, open_store

SAKILA = DATASETS / "sakila"
SAKILA_FILES = ("-f", "1-postgres-sakila-schema.sql", "-f", "2-postgres-sakila-insert-data-using-copy.sql")
STORE_SIZE = "3G"
FS_OF = {"btrfs": "btrfs", "reflink": "xfs"}
MiB = 1 << 20


class CowSqlrs(Sqlrs):
    """The harness, knowing which copy-on-write backend its store uses."""

    def __init__(self, state_dir: Path, backend: str):
        super().__init__(state_dir, runtime="native")
        self.backend = backend


def native_available() -> tuple[bool, str]:
    from sqlrs.adapters.native import NativeRuntime

    probe = NativeRuntime(pg_bin=None, user="postgres", binaries_cache=Path("/tmp/sqlrs-test-pg")).probe()
    return probe.available, probe.reason


def attached_loops(image: Path) -> list[str]:
    """Loop devices whose backing file is `image`."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().removesuffix(" (deleted)") == str(image):
                found.append(backing.parts[3])
    return found


def unmount_all(path: Path) -> list[str]:
    """Unmount everything at or below `path` (deepest first); lazily when busy. Problems found."""
    problems = []
    for point in sorted(_fs.mounts_below(path), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            problems.append(f"{point} was busy at the end (unmounted lazily)")
            subprocess.run(["umount", "-l", point], capture_output=True)
    return problems


def volume_teardown(harness: Sqlrs) -> list[str]:
    """Stop everything, unmount the store volume, delete the image and the state dir."""
    state_dir = harness.state_dir
    problems: list[str] = []
    try:
        problems += harness.close()
    except Exception as exc:  # keep cleaning up
        problems.append(f"close: {type(exc).__name__}: {exc}")
    deadline = time.monotonic() + 20
    while processes_mentioning(str(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    problems += unmount_all(state_dir)
    image = state_dir / "store.img"
    image.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    # the kernel lets go of an autoclear loop device after the unmount returns (btrfs closes its
    # devices from a worker): on a loaded machine that takes a moment
    deadline = time.monotonic() + 30
    while attached_loops(image) and time.monotonic() < deadline:
        time.sleep(0.2)
    if attached_loops(image):
        problems.append(f"loop devices still attached to {image}: {attached_loops(image)}")
    return problems


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.backend(name)) for name in FS_OF])
def sqlrs_cow(request: pytest.FixtureRequest) -> Iterator[CowSqlrs]:
    """A fresh state dir whose store is a loop volume made by `sqlrs init local --snapshot <param>`,
    driven with the native runtime."""
    backend: str = request.param
    available, reason = native_available()
    require("native", available, reason)
    if os.geteuid() != 0:
        require(backend, False, "loop volumes need root")
    harness = CowSqlrs(short_tmp(), backend)
    problems: list[str] = []
    try:
        init = harness.run("init", "local", "--snapshot", backend, "--store-size", STORE_SIZE)
        if init.returncode != 0:
            require(backend, False, f"sqlrs init local failed: {init.stderr.strip()}")
        assert "Traceback" not in init.stderr
        mounted = _fs.find_mount(harness.state_dir / "store")
        assert mounted is not None and mounted.fstype == FS_OF[backend], mounted
        yield harness
    finally:
        problems = volume_teardown(harness)
    assert not problems, f"left behind: {problems}"


def status(sq: Sqlrs) -> dict[str, Any]:
    data: dict[str, Any] = sq.json("status", "--cache")
    return data


def remove_instances(sq: Sqlrs) -> None:
    for instance in sq.instances():
        result = sq.run("rm", instance["id"])
        assert result.returncode == 0, result.stderr


# --- the walking scenarios on copy-on-write stores -------------------------------------------------


def test_sakila_golden_cache_hit_and_rm(sqlrs_cow: CowSqlrs) -> None:
    sq = sqlrs_cow
    backend = sq.backend
    first = sq.run("prepare:psql", *sq.runtime_flags(), "--", *SAKILA_FILES, cwd=SAKILA)
    assert first.returncode == 0, first.stderr
    assert "WARNING" not in first.stderr  # no copy fallback here
    dsn = first.stdout.strip()
    assert golden(dsn, "sakila") == ""
    info = status(sq)
    assert info["snapshot"]["backend"] == backend
    assert info["warnings"] == []
    states = {s["id"]: s for s in sq.states()}
    assert len(states) == 3  # base + two steps
    assert all(s["size_bytes"] > 0 for s in states.values())

    plan = sq.plan(*SAKILA_FILES, cwd=SAKILA)
    assert [p["cached"] for p in plan] == [True, True, True]
    second = sq.prepare(*SAKILA_FILES, cwd=SAKILA)
    assert second != dsn
    assert {s["id"] for s in sq.states()} == set(states)  # nothing was built
    assert golden(second, "sakila") == ""
    psql(dsn, "DELETE FROM payment")  # instances are isolated
    assert psql(second, "SELECT count(*) FROM payment") == "16049"
    assert next(s for s in sq.states() if s["id"] == plan[-1]["state_id"])["hits"] >= 1

    # the instances share the state's extents: cloning costs (almost) no disk
    store_root = sq.state_dir / "store"
    store = open_store(store_root, backend)
    state_dir = store_root / "states" / plan[-1]["state_id"]
    instance_dirs = [store_root / "instances" / i["id"] for i in sq.instances()]
    alone = store.allocated_bytes([state_dir])
    together = store.allocated_bytes([state_dir, *instance_dirs])
    assert together < alone * 1.5, (alone, together)

    target = next(i for i in sq.instances() if i["dsn"] == dsn)
    data_dir = store_root / "instances" / target["id"]
    assert data_dir.is_dir()
    result = sq.run("rm", target["id"])
    assert result.returncode == 0, result.stderr
    assert not data_dir.exists()
    assert not processes_mentioning(str(data_dir))
    assert len(sq.instances()) == 1
    assert sq.run("rm", target["id"]).returncode == 0  # idempotent


def test_editing_the_last_step_rebuilds_only_it(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    check_rebuild_of_last_step(sqlrs_cow, workspace)


def test_rm_leaves_nothing_behind(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    sq = sqlrs_cow
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT generate_series(1, 1000) AS x;\n")
    dsn = sq.prepare("-f", "a.sql", cwd=workspace)
    assert psql(dsn, "SELECT count(*) FROM a") == "1000"
    plan = sq.plan("-f", "a.sql", cwd=workspace)
    base = plan[0]["state_id"]
    removed = sq.run("rm", base, "--recurse")
    assert removed.returncode == 0, removed.stderr
    assert sq.instances() == [] and sq.states() == []
    store_root = sq.state_dir / "store"
    for sub in ("states", "instances", "scratch", "tmp", "standby"):
        assert list((store_root / sub).iterdir()) == [], sub
    assert not processes_mentioning(str(store_root))
    if sq.backend == "btrfs":
        listing = subprocess.run(["btrfs", "subvolume", "list", "-o", str(store_root)], capture_output=True,
                                 text=True, check=True).stdout
        assert listing.strip() == "", listing


def test_a_hit_takes_the_standby_clone_made_after_the_previous_one(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    sq = sqlrs_cow
    # standby clones alone: a warm instance would take the standby clone before the second hit does
    assert sq.run("config", "set", "warm.enabled", "false").returncode == 0
    standby = sq.state_dir / "store" / "standby"
    write(workspace / "a.sql", "CREATE TABLE a AS SELECT generate_series(1, 1000) AS x;\n")
    first = sq.prepare("-f", "a.sql", cwd=workspace)
    state_id = sq.plan("-f", "a.sql", cwd=workspace)[-1]["state_id"]
    wait_for(lambda: len(list(standby.iterdir())) == 1, 20, "a standby clone of the state")
    [made] = list(standby.iterdir())
    assert made.name.startswith(state_id)
    identity = (made.stat().st_dev, made.stat().st_ino)

    second = sq.prepare("-f", "a.sql", cwd=workspace)
    instance = next(i for i in sq.instances() if i["dsn"] == second)
    taken = sq.state_dir / "store" / "instances" / instance["id"]
    assert (taken.stat().st_dev, taken.stat().st_ino) == identity  # renamed, not cloned again
    assert not made.exists()
    assert psql(second, "SELECT count(*) FROM a") == "1000"
    psql(second, "INSERT INTO a VALUES (0)")
    assert psql(first, "SELECT count(*) FROM a") == "1000"  # instances stay isolated
    wait_for(lambda: len(list(standby.iterdir())) == 1, 20, "the next standby clone")
    assert list(standby.iterdir()) != [made]

    # none survives an engine restart: nothing records them
    remove_instances(sq)
    assert sq.run("engine", "stop").returncode == 0
    assert sq.run("engine", "start").returncode == 0
    assert list(standby.iterdir()) == []
    # removing the state discards its standby clone, also one still being made
    sq.prepare("-f", "a.sql", cwd=workspace)
    remove_instances(sq)
    removed = sq.run("rm", state_id)
    assert removed.returncode == 0, removed.stderr
    assert list(standby.iterdir()) == []


def test_the_volume_is_mounted_again_after_a_reboot(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    sq = sqlrs_cow
    write(workspace / "a.sql", "CREATE TABLE kept AS SELECT 42 AS x;\n")
    sq.prepare("-f", "a.sql", cwd=workspace)
    remove_instances(sq)
    assert sq.run("engine", "stop").returncode == 0
    store_root = sq.state_dir / "store"
    subprocess.run(["umount", str(store_root)], check=True)  # what a reboot does
    assert _fs.find_mount(store_root) is None
    assert list(store_root.iterdir()) == []

    assert sq.run("engine", "start").returncode == 0
    mounted = _fs.find_mount(store_root)
    assert mounted is not None and mounted.fstype == FS_OF[sq.backend]
    assert [p["cached"] for p in sq.plan("-f", "a.sql", cwd=workspace)] == [True, True]
    dsn = sq.prepare("-f", "a.sql", cwd=workspace)
    assert psql(dsn, "SELECT x FROM kept") == "42"
    again = sq.run("init", "local", "--snapshot", sq.backend)
    assert again.returncode == 0 and "kept" in again.stdout, again.stderr  # idempotent, nothing lost
    assert sq.instances()[0]["status"] == "running"


# --- the cache cap -----------------------------------------------------------------------------------


def chain_sql(k: int) -> str:
    """A step of about 15 MB (7 MB of table, plus its WAL), different for every k."""
    return (f"CREATE TABLE t{k} AS SELECT g, repeat(md5((g * {k + 1})::text), 8) AS pad "
            f"FROM generate_series(1, 25000) AS g")


def test_eviction_keeps_the_cache_under_its_cap(sqlrs_cow: CowSqlrs) -> None:
    sq = sqlrs_cow
    sq.prepare("-c", chain_sql(0))
    remove_instances(sq)
    states = {s["id"]: s for s in sq.states()}
    base = next(s for s in states.values() if s["parent_id"] is None)
    step = next(s for s in states.values() if s["parent_id"] is not None)
    assert step["size_bytes"] > 5 * MiB  # the increment: the table and its WAL, not the base again
    assert step["size_bytes"] < base["size_bytes"]
    cap = base["size_bytes"] + int(3.5 * step["size_bytes"])
    assert sq.run("config", "set", "cache.capacity.max_bytes", str(cap)).returncode == 0

    built = [step["id"]]
    for k in range(1, 6):
        result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", chain_sql(k))
        assert result.returncode == 0, result.stderr
        built.append(next(i for i in sq.instances())["state_id"])
        remove_instances(sq)
        info = status(sq)["cache"]
        assert info["size_bytes"] <= cap, (k, info, cap)
        assert info["max_bytes"] == cap
        present = {s["id"] for s in sq.states()}
        assert built[-1] in present  # the state just built stays
        assert base["id"] in present
        if k >= 3:
            assert "evicted state" in result.stderr
    present = {s["id"] for s in sq.states()}
    assert len(present) <= 4, present  # the base and at most three steps fit
    assert status(sq)["cache"]["evicted_states"] >= 2
    for sub in ("states", "tmp", "scratch"):  # evicted data is gone from the store, not only the metadata
        names = {p.name for p in (sq.state_dir / "store" / sub).iterdir()}
        assert names <= present, (sub, names - present)


def test_no_space_when_nothing_can_be_evicted(sqlrs_cow: CowSqlrs) -> None:
    sq = sqlrs_cow
    kept = sq.prepare("-c", chain_sql(0))  # its instance pins the chain
    assert sq.run("config", "set", "cache.capacity.max_bytes", "1M").returncode == 0
    before = {s["id"] for s in sq.states()}
    result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", chain_sql(1))
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "cache.capacity.max_bytes" in result.stderr and "no state can be evicted" in result.stderr
    assert "Traceback" not in result.stderr
    job = sq.json("ls", "--jobs")[-1]
    assert job["status"] == "failed"
    error = job["error"]
    assert error["code"] == "no_space"
    assert error["details"]["needed_bytes"] > 0
    assert error["details"]["available_bytes"] == 0
    assert {s["id"] for s in sq.states()} == before  # nothing built, nothing evicted
    assert psql(kept, "SELECT count(*) FROM t0") == "25000"
    assert len(sq.instances()) == 1
    assert list((sq.state_dir / "store" / "scratch").iterdir()) == []

    # once the instance is gone its chain can be evicted, and the cap is reached again
    assert sq.run("config", "set", "cache.capacity.max_bytes", str(200 * MiB)).returncode == 0
    remove_instances(sq)
    dsn = sq.prepare("-c", chain_sql(1))
    assert psql(dsn, "SELECT count(*) FROM t1") == "25000"


def test_eviction_keeps_the_free_space_reserve(sqlrs_cow: CowSqlrs) -> None:
    sq = sqlrs_cow
    for k in range(5):
        sq.prepare("-c", chain_sql(k))
        remove_instances(sq)
    steps = [s for s in sq.states() if s["parent_id"] is not None]
    assert len(steps) == 5
    step_bytes = max(s["size_bytes"] for s in steps)
    reserve = 200 * MiB  # below a tenth of the volume: the configured value applies as is
    assert sq.run("config", "set", "cache.capacity.reserve_bytes", str(reserve)).returncode == 0
    store_root = sq.state_dir / "store"
    store = open_store(store_root, sq.backend)
    store.settle()
    filler = store_root / "filler"  # someone else's data on the store's filesystem
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, store.free_bytes() - reserve + int(1.5 * step_bytes))
    try:
        store.settle()
        assert store.free_bytes() < reserve
        result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", chain_sql(9))
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("evicted state") >= 2, result.stderr
        remaining = [s for s in sq.states() if s["parent_id"] is not None]
        assert len(remaining) <= 4
        info = status(sq)
        assert info["cache"]["evicted_states"] >= 2
        assert info["cache"]["reserve_bytes"] == reserve
        remove_instances(sq)
        store.settle()
        assert store.free_bytes() >= reserve - 16 * MiB, (store.free_bytes(), reserve)

        # too little evictable to keep the reserve: NoSpace, naming the reserve, nothing evicted
        kept = sq.prepare("-c", chain_sql(9))  # a cache hit: no eviction check
        with open(filler.with_suffix(".2"), "wb") as handle:
            for leave in range(8 * MiB, 256 * MiB, 8 * MiB):  # filesystems keep some space to themselves
                try:
                    os.posix_fallocate(handle.fileno(), 0, store.free_bytes() - leave)
                    break
                except OSError:
                    continue
        store.settle()
        assert store.free_bytes() < 100 * MiB
        before = {s["id"] for s in sq.states()}
        failed = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-c", chain_sql(10))
        assert failed.returncode == 1
        assert "cache.capacity.reserve_bytes" in failed.stderr and "Traceback" not in failed.stderr
        error = sq.json("ls", "--jobs")[-1]["error"]
        assert error["code"] == "no_space" and error["details"]["reason"] == "reserve_bytes"
        assert error["details"]["needed_bytes"] > error["details"]["available_bytes"] > 0
        assert {s["id"] for s in sq.states()} == before
        assert psql(kept, "SELECT count(*) FROM t9") == "25000"
    finally:
        filler.unlink(missing_ok=True)
        filler.with_suffix(".2").unlink(missing_ok=True)


def test_checkpoints_rebuild_what_the_files_say(sqlrs_cow: CowSqlrs, workspace: Path) -> None:
    """A chain with unkept steps, edited in the middle and at the end (test_build_checkpoints.py)."""
    from test_build_checkpoints import STEPS, check

    check(sqlrs_cow, workspace, {})
    check(sqlrs_cow, workspace, {7: "v2"})
    check(sqlrs_cow, workspace, {7: "v2", STEPS: "v3"})
