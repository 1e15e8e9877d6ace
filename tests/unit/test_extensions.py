"""Runtimes and snapshot stores are entry points (sqlrs/extensions.py, SPEC section 12): sqlrs
registers its own in pyproject.toml like any other package, and the CLI's fast path reads the
names from a cache file that an install or removal invalidates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from sqlrs import extensions
from sqlrs.ports.runtime import RuntimePlugin
from sqlrs.ports.snapshots import SnapshotStorePlugin


def test_sqlrs_registers_its_own_runtimes_and_stores_as_entry_points() -> None:
    runtimes = {ep.name: ep for ep in entry_points(group="sqlrs.runtimes")}
    stores = {ep.name: ep for ep in entry_points(group="sqlrs.snapshot_stores")}
    assert {"native", "docker", "podman"} <= set(runtimes)
    assert {"btrfs", "reflink", "copy"} <= set(stores)
    assert extensions.names(extensions.RUNTIMES, own=True) == ("docker", "native", "podman")
    assert extensions.names(extensions.SNAPSHOT_STORES, own=True) == ("btrfs", "copy", "reflink")


def test_the_plugins_load_with_the_priorities_auto_follows() -> None:
    runtimes = dict(extensions.load(extensions.RUNTIMES, RuntimePlugin))
    stores = dict(extensions.load(extensions.SNAPSHOT_STORES, SnapshotStorePlugin))
    assert all(isinstance(runtimes[name], RuntimePlugin) for name in ("docker", "podman", "native"))
    assert all(isinstance(stores[name], SnapshotStorePlugin) for name in ("btrfs", "reflink", "copy"))
    by_priority = sorted(("docker", "podman", "native"), key=lambda n: -runtimes[n].priority)  # type: ignore[attr-defined]
    assert by_priority == ["docker", "podman", "native"]
    by_priority = sorted(("btrfs", "reflink", "copy"), key=lambda n: -stores[n].priority)  # type: ignore[attr-defined]
    assert by_priority == ["btrfs", "reflink", "copy"]


def test_a_wrong_object_is_reported_not_loaded() -> None:
    loaded = dict(extensions.load(extensions.RUNTIMES, SnapshotStorePlugin))  # runtimes are not stores
    assert isinstance(loaded["native"], TypeError)
    assert "is not a SnapshotStorePlugin named 'native'" in str(loaded["native"])


def names_in_child(cache_home: Path, pythonpath: Path) -> dict[str, object]:
    """What a fresh process gets from cached_names (and whether it imported importlib.metadata)."""
    code = ("import json, sys\n"
            "from sqlrs import extensions\n"
            "names = extensions.cached_names(extensions.RUNTIMES)\n"
            "print(json.dumps({'names': names, 'scanned': 'importlib.metadata' in sys.modules}))\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home),
           "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_the_fast_path_reads_names_from_a_cache_until_something_is_installed(tmp_path: Path) -> None:
    cache_home, site = tmp_path / "cache", tmp_path / "site"
    site.mkdir()
    first = names_in_child(cache_home, site)
    assert first["scanned"] is True
    names = first["names"]
    assert isinstance(names, list) and {"docker", "podman", "native"} <= set(names)
    (cache_file,) = (cache_home / "sqlrs").iterdir()

    second = names_in_child(cache_home, site)
    assert second == {"names": first["names"], "scanned": False}  # importlib.metadata never imported

    (site / "unrelated.txt").write_text("a file that is no distribution")  # e.g. in the current directory
    assert names_in_child(cache_home, site)["scanned"] is False

    # a distribution installed into a directory on sys.path: its metadata appears there
    add_plugin(site)
    dist = site / "sqlrs_demo_plugin-1.0.dist-info"
    third = names_in_child(cache_home, site)
    assert third["scanned"] is True and "demo" in third["names"]  # type: ignore[operator]
    (written,) = set((cache_home / "sqlrs").iterdir()) - {cache_file}  # site now holds metadata: a file of its own
    assert json.loads(written.read_text())["names"]["sqlrs.runtimes"] == third["names"]
    assert names_in_child(cache_home, site) == {"names": third["names"], "scanned": False}

    # an upgrade in place: the same folder, a fresh metadata directory
    os.utime(dist, ns=(1, 1))
    assert names_in_child(cache_home, site)["scanned"] is True


def add_plugin(site: Path) -> None:
    dist = site / "sqlrs_demo_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sqlrs-demo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sqlrs.runtimes]\ndemo = sqlrs_demo_plugin:PLUGIN\n")


def test_two_environments_of_one_interpreter_keep_a_cache_each(tmp_path: Path) -> None:
    """One interpreter run with and without a plugin's folder on PYTHONPATH (a test suite beside a
    shell): each reads its own cache, neither rewrites the other's."""
    cache_home, plain, with_plugin = tmp_path / "cache", tmp_path / "plain", tmp_path / "plugin"
    plain.mkdir()
    add_plugin(with_plugin)
    assert names_in_child(cache_home, plain)["scanned"] is True
    assert names_in_child(cache_home, with_plugin)["scanned"] is True
    for _ in range(2):
        without = names_in_child(cache_home, plain)
        assert without["scanned"] is False and "demo" not in without["names"]  # type: ignore[operator]
        inside = names_in_child(cache_home, with_plugin)
        assert inside["scanned"] is False and "demo" in inside["names"]  # type: ignore[operator]
