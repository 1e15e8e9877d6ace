"""Crash recovery (services/recovery.py) on fakes: an engine that starts on what a killed one
left makes the store and the metadata agree again. The real crash points (a killed engine, real
servers and containers) are in tests/faults/test_crash.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fakes import FakeRuntime, Fakes, job_context, make_fakes, prepare

from sqlrs.config_file import ConfigFile
from sqlrs.domain.model import JobStatus
from sqlrs.entrypoints.engine.bootstrap import Services, bootstrap


class FakeContainers(FakeRuntime):
    """A container runtime: it also answers the ContainerHousekeeping port."""

    def __init__(self) -> None:
        super().__init__(name="docker")
        self.labelled: dict[str, dict[str, str]] = {}
        self.removed: list[str] = []

    def leftovers(self, labels: Mapping[str, str | None] | None = None) -> list[str]:
        return [ref for ref, have in self.labelled.items()
                if all(have.get(key) == value for key, value in (labels or {}).items())]

    def remove_container(self, ref: str) -> None:
        self.removed.append(ref)
        self.labelled.pop(ref, None)


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sqfrec", dir="/tmp"))  # short: run dirs live below it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(root: Path, fakes: Fakes, killed: list[Path], containers: FakeContainers | None = None,
          recover: bool = True) -> Services:
    """An engine on `root` (the fakes are what survives it: metadata, store, servers)."""
    adapters = fakes.adapters()
    adapters.kill_leftover_server = killed.append
    if containers is not None:
        adapters.runtimes["docker"] = lambda: containers
    return bootstrap(root, adapters, config=ConfigFile(root / "config.json", environ={}), recover=recover)


def test_a_restart_removes_what_a_crash_left_half_made(root: Path) -> None:
    fakes, killed = make_fakes(root), list[Path]()
    services = start(root, fakes, killed)
    kept = prepare(services, "create table a()")
    layout = services.layout
    # what a killed engine leaves: a scratch and a temporary clone, a state directory whose row was
    # never written, a row whose directory is gone, an instance directory nobody knows, a job
    (layout.scratch_dir / "b123").mkdir()
    (layout.tmp_dir / "abc.1234").mkdir()
    (layout.states_dir / ("f" * 64)).mkdir()
    lost = fakes.repo.get_state(kept["state_id"])
    assert lost is not None and lost.parent_id is not None
    fakes.store.delete(layout.abs(f"states/{lost.parent_id}"))
    (layout.instances_dir / "0rphan").mkdir()
    running = job_context(services)

    start(root, fakes, killed)

    assert list(layout.scratch_dir.iterdir()) == [] and list(layout.tmp_dir.iterdir()) == []
    assert sorted(p.name for p in killed) == ["0rphan", "abc.1234", "b123"]  # their servers were stopped first
    assert sorted(p.name for p in layout.states_dir.iterdir()) == sorted(s.id for s in fakes.repo.list_states())
    assert fakes.repo.get_state(lost.parent_id) is None  # forgotten: its data is gone
    assert fakes.repo.get_state(kept["state_id"]) is not None
    assert [p.name for p in layout.instances_dir.iterdir()] == [kept["instance_id"]]  # the known one stays
    job = fakes.repo.get_job(running.job.id)
    assert job is not None and job.status == JobStatus.FAILED and job.error is not None
    assert job.error["code"] == "interrupted"


def test_a_clean_restart_changes_nothing(root: Path) -> None:
    fakes, killed = make_fakes(root), list[Path]()
    services = start(root, fakes, killed)
    result = prepare(services, "create table a()", "create table b()")
    before = (sorted(s.id for s in fakes.repo.list_states()), sorted(os.listdir(services.layout.states_dir)))
    start(root, fakes, killed)
    assert (sorted(s.id for s in fakes.repo.list_states()), sorted(os.listdir(services.layout.states_dir))) == before
    assert killed == [] and fakes.repo.get_instance(result["instance_id"]) is not None


def test_containers_nobody_owns_are_removed_and_owned_ones_kept(root: Path) -> None:
    fakes, killed, containers = make_fakes(root), list[Path](), FakeContainers()
    services = start(root, fakes, killed, containers, recover=False)
    mine = {"sqlrs.state_dir": str(services.layout.state_dir)}
    result = prepare(services, "create table a()", runtime="docker")
    instance = fakes.repo.get_instance(result["instance_id"])
    assert instance is not None and instance.runtime == "docker"
    containers.labelled = {instance.runtime_ref: mine, "stray": mine,
                           "other-state-dir": {"sqlrs.state_dir": "/elsewhere"}}
    start(root, fakes, killed, containers)
    assert containers.removed == ["stray"]
    assert set(containers.labelled) == {instance.runtime_ref, "other-state-dir"}


def test_an_unreachable_daemon_is_skipped_not_fatal(root: Path) -> None:
    fakes, killed, containers = make_fakes(root), list[Path](), FakeContainers()
    services = start(root, fakes, killed, containers, recover=False)
    (services.layout.scratch_dir / "b1").mkdir()  # leftovers: every runtime may have containers
    containers.available = False
    containers.labelled = {"stray": {"sqlrs.state_dir": str(services.layout.state_dir)}}
    start(root, fakes, killed, containers)
    assert containers.removed == [] and list(services.layout.scratch_dir.iterdir()) == []
