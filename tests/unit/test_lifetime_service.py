"""LifetimeService on a fake clock and fake ports: idle TTLs and owner processes, no waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sqlrs import procfs
from sqlrs.domain.model import Instance, InstanceStatus
from sqlrs.services.instances.lifetime import LifetimeService

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return (self.at - T0).total_seconds()

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class FakeRepo:
    def __init__(self) -> None:
        self.rows: dict[str, Instance] = {}

    def list_instances(self, state_id: str | None = None) -> list[Instance]:
        return [_copy(i) for i in self.rows.values()]

    def get_instance(self, instance_id: str) -> Instance | None:
        row = self.rows.get(instance_id)
        return None if row is None else _copy(row)

    def update_instance(self, instance: Instance) -> None:
        if instance.id in self.rows:
            self.rows[instance.id] = _copy(instance)


class FakeInstances:
    def __init__(self, repo: FakeRepo) -> None:
        self.repo = repo
        self.removed: list[str] = []

    def live_status(self, instance: Instance) -> InstanceStatus:
        return InstanceStatus.RUNNING

    def remove(self, instance: Instance) -> None:
        self.removed.append(instance.id)
        self.repo.rows.pop(instance.id, None)


class FakeAdmin:
    def __init__(self) -> None:
        self.connections: dict[int, int] = {}  # port -> client connections

    def client_connections(self, run_path: Any, port: int, timeout: float = 2.0, database: str | None = None) -> int:
        return self.connections.get(port, 0)


def _copy(instance: Instance) -> Instance:
    import attrs

    return attrs.evolve(instance)


def instance(instance_id: str, port: int, ttl: int = 0, owner: tuple[int, int] | None = None,
             pooled: bool = False) -> Instance:
    return Instance(id=instance_id, state_id="s" * 64, runtime="native", runtime_ref="1", image=None,
                    host="127.0.0.1", port=port, user="sqlrs", password="x", dbname="postgres",
                    data_path=f"instances/{instance_id}", run_path=f"/nonexistent/{instance_id}",
                    status=InstanceStatus.RUNNING, created_at=T0, last_used_at=T0, ttl_seconds=ttl,
                    pooled=pooled, owner_pid=owner[0] if owner else None, owner_started=owner[1] if owner else None)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.repo = FakeRepo()
        self.instances = FakeInstances(self.repo)
        self.admin = FakeAdmin()
        self.living: set[tuple[int, int]] = set()
        self.released: list[tuple[str, str]] = []
        self.lifetime = LifetimeService(self.repo, self.instances, self.admin, self.clock,  # type: ignore[arg-type]
                                        alive=lambda pid, started: (pid, started) in self.living)
        self.lifetime.release_hold = lambda state_id, holder: self.released.append((state_id, holder))

    def add(self, item: Instance) -> Instance:
        self.repo.rows[item.id] = item
        self.lifetime.noticed(item)
        return item


@pytest.fixture
def world() -> World:
    return World()


def test_an_idle_instance_expires_exactly_after_its_ttl(world: World) -> None:
    world.add(instance("idle", 5001, ttl=3))
    world.add(instance("forever", 5002))
    world.clock.advance(2.9)
    assert world.lifetime.check() == []
    assert world.lifetime.describe("idle", 3, False)["expires_in_seconds"] == pytest.approx(0.1, abs=0.05)
    world.clock.advance(0.2)
    assert world.lifetime.check() == ["idle"]
    world.clock.advance(3600)
    assert world.lifetime.check() == []
    assert set(world.repo.rows) == {"forever"}


def test_a_connected_instance_stays_and_expires_once_its_client_leaves(world: World) -> None:
    world.add(instance("busy", 5001, ttl=3))
    world.admin.connections[5001] = 1
    for _ in range(10):  # an hour of ticks, connected throughout
        world.clock.advance(360)
        assert world.lifetime.check() == []
    described = world.lifetime.describe("busy", 3, False)
    assert described["connections"] == 1 and described["expires_in_seconds"] == 3
    world.admin.connections[5001] = 0
    world.clock.advance(1)
    assert world.lifetime.check() == []  # the last probe saw it used: its idle clock starts now
    world.clock.advance(3)
    assert world.lifetime.check() == ["busy"]


def test_a_request_on_the_instance_restarts_its_idle_clock(world: World) -> None:
    world.add(instance("used", 5001, ttl=10))
    world.clock.advance(8)
    world.lifetime.touch("used")
    world.clock.advance(8)
    assert world.lifetime.check() == []
    world.clock.advance(2)
    assert world.lifetime.check() == ["used"]


def test_instances_of_a_gone_owner_are_removed_at_the_next_check(world: World) -> None:
    world.living = {(100, 7), (200, 8)}
    world.add(instance("mine", 5001, ttl=600, owner=(100, 7)))
    world.add(instance("other", 5002, ttl=600, owner=(200, 8)))
    world.add(instance("cli", 5003))  # no owner: outlives whoever made it
    world.add(instance("spare", 5004, owner=(100, 7), pooled=True))  # pool spares belong to the pool
    assert world.lifetime.check() == []
    assert world.lifetime.pending()
    world.living = {(200, 8), (100, 99)}  # pid 100 now is another process (a reused pid)
    assert world.lifetime.check() == ["mine"]  # no clock advance: the TTL plays no part
    assert set(world.repo.rows) == {"other", "cli", "spare"}
    world.living = set()
    assert world.lifetime.check() == ["other"]
    assert world.instances.removed == ["mine", "other"]


def test_a_disowned_instance_stays(world: World) -> None:
    world.living = {(100, 7)}
    kept = world.add(instance("kept", 5001, owner=(100, 7)))
    world.lifetime.adopt(kept, None)
    world.living = set()
    assert world.lifetime.check() == []
    assert "kept" in world.repo.rows and world.repo.rows["kept"].owner_pid is None


def test_adopt_records_the_owner(world: World) -> None:
    world.living = {(100, 7)}
    created = world.add(instance("created", 5001))
    world.lifetime.adopt(created, (100, 7))
    assert (world.repo.rows["created"].owner_pid, world.repo.rows["created"].owner_started) == (100, 7)
    world.living = set()
    assert world.lifetime.check() == ["created"]


def test_pool_holds_of_a_gone_owner_are_released_once(world: World) -> None:
    world.living = {(100, 7), (200, 8)}
    world.lifetime.hold("a" * 64, "run-gw0", (100, 7))
    world.lifetime.hold("a" * 64, "run-gw1", (200, 8))
    world.lifetime.hold("b" * 64, "left", (300, 9))
    world.lifetime.unhold("b" * 64, "left")  # left properly: nothing to release for it
    assert world.lifetime.pending()
    world.lifetime.check()
    assert world.released == []
    world.living = {(200, 8)}
    world.lifetime.check()
    world.lifetime.check()
    assert world.released == [("a" * 64, "run-gw0")]
    world.lifetime.unhold("a" * 64, None)  # the pool was drained: its holds are gone too
    world.living = set()
    world.lifetime.check()
    assert world.released == [("a" * 64, "run-gw0")]
    assert not world.lifetime.pending()


def test_procfs_tells_this_process_from_a_reused_pid() -> None:
    me = procfs.own_identity()
    assert me is not None
    assert procfs.alive(*me)
    assert not procfs.alive(me[0], me[1] + 1)  # same pid, another start: another process
    assert procfs.start_time(2 ** 22 + 1) is None  # above pid_max: no such process


def test_owner_fields_in_requests() -> None:
    from sqlrs.domain.errors import UsageError
    from sqlrs.services.requests import Owner, parse_instance, parse_pool

    assert parse_instance({"state_id": "ab", "owner": {"pid": 10, "started": 5}}).owner == Owner(10, 5)
    assert parse_instance({"state_id": "ab"}).owner is None
    assert parse_pool({"size": 2, "holder": "h", "owner": {"pid": 10, "started": 5}}).owner == Owner(10, 5)
    for bad in ({"size": 2, "owner": {"pid": 10, "started": 5}},  # an owner holds as a named holder
                {"size": 2, "holder": "h", "owner": {"pid": 0, "started": 5}},
                {"size": 2, "holder": "h", "owner": {"pid": "10", "started": 5}},
                {"size": 2, "holder": "h", "owner": {"pid": 10}}):
        with pytest.raises(UsageError):
            parse_pool(bad)


def test_a_killed_process_counts_as_gone_before_it_is_reaped() -> None:
    import signal
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    try:
        started = procfs.start_time(child.pid)
        assert started is not None and procfs.alive(child.pid, started)
        child.send_signal(signal.SIGKILL)
        # a zombie until waited for (an xdist worker whose controller has not reaped it yet)
        deadline = 100
        while procfs.start_time(child.pid) is not None and deadline:
            import time

            time.sleep(0.05)
            deadline -= 1
        assert not procfs.alive(child.pid, started)
    finally:
        child.kill()
        child.wait()


def test_an_owner_the_engine_cannot_see_is_ignored(world: World) -> None:
    # e.g. a client in another pid namespace: its pid means nothing here, so only the TTL applies
    created = world.add(instance("foreign", 5001, ttl=600))
    world.lifetime.adopt(created, (4242, 1))
    world.lifetime.hold("a" * 64, "foreign", (4242, 1))
    assert world.repo.rows["foreign"].owner_pid is None
    assert world.lifetime.check() == [] and world.released == []
