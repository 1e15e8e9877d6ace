"""Copies made ahead for database instances follow demand (services/instances/databases.py).

The floor (`databases.spares`) is kept always; claims of the last DEMAND_WINDOW_SECONDS raise the
target up to `databases.burst_spares`; copies are made by the copier threads and dropped again once
demand falls. The host's SQL is recorded by a fake admin; time is a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.domain.demand import QUIET_SECONDS
from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.instances.databases import DEMAND_WINDOW_SECONDS, DatabaseInstances

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return self.seconds


class RecordingAdmin:
    """The host's SQL: which databases exist, as CREATE/DROP DATABASE left them."""

    def __init__(self) -> None:
        self.databases: set[str] = set()
        self.lock = threading.Lock()

    def execute(self, run_dir: Path, port: int, statements: list[str], dbname: str = "postgres") -> None:
        for statement in statements:
            words = statement.split()
            with self.lock:
                if statement.startswith("CREATE DATABASE"):
                    self.databases.add(words[2].strip('"'))
                elif statement.startswith("DROP DATABASE"):
                    self.databases.discard(words[4].strip('"'))

    def query(self, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        return []


class RunningInstances:
    def live_status(self, instance: Instance) -> InstanceStatus:
        return InstanceStatus.RUNNING


HOST = Instance(id="host00000001", state_id="s" * 64, runtime="native", runtime_ref="", image=None,
                host="127.0.0.1", port=5432, user="sqlrs", password="pw", dbname="postgres", data_path="/nowhere",
                run_path="/nowhere", status=InstanceStatus.RUNNING, created_at=NOW, last_used_at=NOW,
                kind=InstanceKind.HOST)


@pytest.fixture
def service() -> Iterator[tuple[DatabaseInstances, RecordingAdmin, FakeClock]]:
    admin, clock = RecordingAdmin(), FakeClock()
    databases = DatabaseInstances(repo=None, instances=RunningInstances(), admin=admin, clock=clock,  # type: ignore[arg-type]
                                  spares=lambda: 2, host_idle_seconds=lambda: 600, burst_spares=lambda: 5)
    copier = databases._copier = ThreadPoolExecutor(max_workers=2)  # what start() makes, without its loop
    yield databases, admin, clock
    copier.shutdown(wait=True)


def settle(databases: DatabaseInstances, admin: RecordingAdmin, expected: int) -> None:
    """Refill until the host holds `expected` copies (the copier threads finish quickly)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        databases._refill(HOST)
        with databases._lock:
            done = not databases._making.get(HOST.id) and len(databases._ready.get(HOST.id, [])) == expected
        if done:
            break
        time.sleep(0.01)
    assert sorted(admin.databases) == sorted(f"sqlrs_{i}" for i in databases._ready[HOST.id])
    assert len(admin.databases) == expected, admin.databases


def test_the_floor_is_kept_without_claims(service: tuple[DatabaseInstances, RecordingAdmin, FakeClock]) -> None:
    databases, admin, _ = service
    assert databases.wanted(HOST) == 2
    settle(databases, admin, 2)


def test_claims_raise_the_target_up_to_the_cap_and_it_falls_back(
        service: tuple[DatabaseInstances, RecordingAdmin, FakeClock]) -> None:
    databases, admin, clock = service
    for _ in range(3):
        databases.note_claim(HOST.id)
    assert databases.wanted(HOST) == 3
    settle(databases, admin, 3)
    for _ in range(10):
        databases.note_claim(HOST.id)
    assert databases.wanted(HOST) == 5  # capped by burst_spares
    settle(databases, admin, 5)
    clock.seconds += DEMAND_WINDOW_SECONDS / 2
    databases.note_claim(HOST.id)
    assert databases.wanted(HOST) == 5  # the earlier claims still count
    clock.seconds += DEMAND_WINDOW_SECONDS / 2 + 1
    assert databases.wanted(HOST) == 2  # only the last claim is recent: the floor
    settle(databases, admin, 2)  # the copies beyond it are dropped


def test_a_cap_below_the_floor_keeps_the_floor(service: tuple[DatabaseInstances, RecordingAdmin, FakeClock]) -> None:
    databases, _, _ = service
    databases.burst_spares = lambda: 0
    for _ in range(4):
        databases.note_claim(HOST.id)
    assert databases.wanted(HOST) == 2


# -- demand: hosts and copies once nobody is testing (wired on the fakes of tests/fakes.py) -------
def hosts(services: Services) -> dict[str, Instance]:
    return {i.state_id: i for i in services.repo.list_instances() if i.kind == InstanceKind.HOST}


def copies_after_refill(services: Services, host: Instance) -> int:
    """Refill the host (the copier threads of start(), without its loop) and count its copies."""
    services.databases._refill(host)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with services.databases._lock:
            if not services.databases._making.get(host.id):
                return len(services.databases._ready.get(host.id, []))
        time.sleep(0.01)
    raise AssertionError("copies never made")


@pytest.fixture
def engine() -> Iterator[tuple[Services, Fakes]]:
    with wired({"databases.spares": 2, "databases.burst_spares": 16, "warm.idle_states": 2}) as (services, fakes):
        services.databases._copier = ThreadPoolExecutor(max_workers=2)
        try:
            yield services, fakes
        finally:
            services.databases.close()


def test_after_a_burst_a_host_keeps_its_floor_of_copies(engine: tuple[Services, Fakes]) -> None:
    services, fakes = engine
    for _ in range(6):
        result = prepare(services, "create table a()", instance_kind="database")
        instance = services.repo.get_instance(result["instance_id"])
        assert instance is not None
        services.instances.remove(instance)
    host = hosts(services)[result["state_id"]]
    assert copies_after_refill(services, host) == 6  # busy: as many as the burst claimed
    fakes.clock.advance(QUIET_SECONDS)
    assert copies_after_refill(services, host) == 2  # idle: databases.spares
    services.databases._tick()
    assert result["state_id"] in hosts(services)  # an idle-kept state keeps its host


def test_the_host_of_a_superseded_state_stops(engine: tuple[Services, Fakes]) -> None:
    services, fakes = engine
    old = prepare(services, "create table a()", instance_kind="database")
    kept = prepare(services, "create table k()", "create table k2()", instance_kind="database")  # another chain
    for result in (old, kept):
        instance = services.repo.get_instance(result["instance_id"])
        assert instance is not None
        services.instances.remove(instance)
    fakes.clock.advance(QUIET_SECONDS)
    services.databases._tick()
    assert set(hosts(services)) == {old["state_id"], kept["state_id"]}  # both idle-kept
    new = prepare(services, "create table a(edited int)", instance_kind="database")  # the same step, edited
    services.databases._tick()
    assert set(hosts(services)) == {new["state_id"], kept["state_id"]}
    assert copies_after_refill(services, hosts(services)[new["state_id"]]) == 2
    # a host that still holds a database instance stays, whatever its state's level
    fakes.clock.advance(services.demand.policy().seconds + 1)
    services.databases._tick()
    assert set(hosts(services)) == {new["state_id"]}
    assert fakes.runtime.running() and len(fakes.runtime.running()) == 1


# -- one-off instances (check:*, bisect:*): no spares follow them ---------------------------------
def test_a_one_off_instance_asks_for_no_spares(engine: tuple[Services, Fakes]) -> None:
    """check:alembic and bisect make an instance of every revision's state once: warm servers or
    copies ahead of each of them would fill the machine with servers while the suite runs."""
    services, _ = engine
    server = prepare(services, "create table a()", spares=False)
    database = prepare(services, "create table b()", instance_kind="database", spares=False)
    assert services.pool.status()["states"] == []  # no warm server was asked for
    host = hosts(services)[database["state_id"]]
    assert services.databases.wanted(host) == 0  # nor copies ahead
    state = services.catalog.find(server["state_id"])
    made, _ = services.instances.hand_out(state, InstanceKind.SERVER, None, name=None, ttl_seconds=0, spares=False)
    assert services.pool.status()["states"] == []
    services.instances.remove(made)
    made, _ = services.instances.hand_out(state, InstanceKind.SERVER, None, name=None, ttl_seconds=0)
    assert [entry["state_id"] for entry in services.pool.status()["states"]] == [state.id]  # a user's instance


def test_a_database_is_never_handed_out_of_a_host_being_stopped(engine: tuple[Services, Fakes]) -> None:
    """The idle check decides to stop a host whose state nobody needs; a hand-out of that state
    that comes at that moment waits, and gets a running host (this one, or a new one)."""
    services, fakes = engine
    first = prepare(services, "create table a()", instance_kind="database", spares=False)
    instance = services.repo.get_instance(first["instance_id"])
    assert instance is not None
    services.instances.remove(instance)
    host = hosts(services)[first["state_id"]]
    state = services.catalog.find(first["state_id"])
    runtime, identity = services.identities.of_state(state, None)
    # a hand-out under way holds the host: the idle check leaves it running
    with services.databases._handing_out(state, runtime, identity) as held:
        assert held.id == host.id
        stopper = threading.Thread(target=services.databases._tick)
        stopper.start()
        stopper.join(timeout=60)
        assert hosts(services)[state.id].id == host.id
    services.databases._tick()  # now nothing holds it, and its state is in no demand
    assert state.id not in hosts(services)
    # a hand-out while the idle check stops the host gets one that runs
    stopping = threading.Event()
    release = threading.Event()
    remove_host = services.databases.remove_host
    again = prepare(services, "create table a()", instance_kind="database", spares=False)  # a host again
    services.instances.remove(services.repo.get_instance(again["instance_id"]))  # type: ignore[arg-type]

    def slow_remove(host: Instance) -> None:
        stopping.set()
        release.wait(60)
        remove_host(host)

    services.databases.remove_host = slow_remove  # type: ignore[method-assign]
    stopper = threading.Thread(target=services.databases._tick)
    stopper.start()
    assert stopping.wait(60)
    handed: list[Instance] = []
    hand_out = threading.Thread(target=lambda: handed.append(
        services.databases.hand_out(state, runtime, identity, spares=False)[0]))
    hand_out.start()
    hand_out.join(0.5)  # it waits for the stop to end (before the fix it took the host being stopped)
    release.set()
    stopper.join(60)
    hand_out.join(60)
    services.databases.remove_host = remove_host  # type: ignore[method-assign]
    [database] = handed
    assert services.repo.get_instance(database.id) is not None
    running_host = services.repo.get_instance(database.host_id or "")
    assert running_host is not None and services.instances.servers.live_status(running_host) == InstanceStatus.RUNNING
    assert len(fakes.runtime.running()) == 1
