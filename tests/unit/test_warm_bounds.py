"""The warm instance service's bookkeeping, with in-memory fakes behind its ports.

Real servers, containers and leftovers are checked in tests/faults/test_warm.py; here: which
states get warm instances, the bounds, claims, and that nothing is forgotten unremoved.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from sqlrs.domain.errors import Conflict, UsageError
from sqlrs.domain.model import Instance, InstanceStatus, State, StateKind
from sqlrs.ports.runtime import RuntimeIdentity
from sqlrs.services.instances.pool import PoolService
from sqlrs.services.instances.warm_set import WarmLimits

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def now(self) -> datetime:
        return NOW


class FakeRepo:
    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.states: dict[str, State] = {}

    def get_instance(self, instance_id: str) -> Instance | None:
        return self.instances.get(instance_id)

    def list_instances(self, state_id: str | None = None) -> list[Instance]:
        return [i for i in self.instances.values() if state_id in (None, i.state_id)]

    def update_instance(self, instance: Instance) -> None:
        self.instances[instance.id] = instance

    def bind_name(self, binding: Any) -> None:
        pass

    def touch_state(self, state_id: str, now: datetime, hit: bool) -> None:
        pass

    def get_state(self, state_id: str) -> State | None:
        return self.states.get(state_id)


class FakeInstances:
    """Starts 'instances' at once (or when `gate` is set), records removals."""

    def __init__(self, repo: FakeRepo) -> None:
        self.repo = repo
        self.counter = 0
        self.removed: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def create(self, state: State, runtime: Any, identity: Any, **kwargs: Any) -> Instance:
        self.gate.wait(30)
        self.counter += 1
        instance = Instance(id=f"w{self.counter}", state_id=state.id, runtime="native", runtime_ref="1", image=None,
                            host="127.0.0.1", port=5000 + self.counter, user="sqlrs", password="p", dbname="postgres",
                            data_path=f"instances/w{self.counter}", run_path="/tmp/x", status=InstanceStatus.RUNNING,
                            created_at=NOW, last_used_at=NOW, pooled=kwargs.get("pooled", False))
        self.repo.instances[instance.id] = instance
        return instance

    def remove(self, instance: Instance) -> None:
        self.removed.append(instance.id)
        self.repo.instances.pop(instance.id, None)

    def live_status(self, instance: Instance) -> InstanceStatus:
        return InstanceStatus.RUNNING


class FakeRuntime:
    name = "native"


def state(state_id: str) -> State:
    return State(id=state_id, parent_id=None, base_id="b", step_hash=None, kind=StateKind.PSQL, runtime="native",
                 source="x", data_path=f"states/{state_id}", size_bytes=0, build_seconds=0.0, created_at=NOW,
                 last_used_at=NOW)


@pytest.fixture
def warm() -> Any:
    repo = FakeRepo()
    instances = FakeInstances(repo)
    limits = {"value": WarmLimits(per_state=1, max_states=2, max_instances=3, idle_seconds=600)}
    identity = RuntimeIdentity(runtime="native", identity="i", version="v", description="d")
    service = PoolService(repo, instances, lambda s, image: (FakeRuntime(), identity), FakeClock(),  # type: ignore[arg-type,return-value]
                          limits=lambda: limits["value"])
    service.start()
    service.fake = (repo, instances, limits)  # type: ignore[attr-defined]
    yield service
    service.close()
    assert [i for i in repo.instances.values() if i.pooled] == []  # close removes every warm instance


def settle(service: PoolService, predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        service.wake()
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out: {what}; {service.status()}")


def ready(service: PoolService) -> dict[str, int]:
    return {s["state_id"]: s["ready"] for s in service.status()["states"]}


def test_used_states_get_one_warm_instance_each_most_recent_first(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]  # noqa: RUF059
    for name in ("a", "b", "c"):
        repo.states[name] = state(name)
        warm.used(state(name), "native", None)
        time.sleep(0.01)
    settle(warm, lambda: ready(warm) == {"b": 1, "c": 1}, "two most recent states warm")
    claimed = warm.claim("c", ttl_seconds=60, name=None, ephemeral=True, job_id="job1")
    assert claimed is not None and not claimed.pooled and claimed.ttl_seconds == 60 and claimed.ephemeral
    assert claimed.job_id == "job1"
    assert warm.claim("a", 0) is None  # not warm (beyond max_states)
    settle(warm, lambda: ready(warm).get("c") == 1, "a replacement for c")
    assert claimed.id not in warm.status()["states"][-1]["instance_ids"]


def test_bounds_lowered_and_off_remove_the_surplus(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]
    repo.states["a"] = state("a")
    warm.configure(state("a"), 3, holder="h")
    settle(warm, lambda: ready(warm) == {"a": 3}, "a pool of 3")
    with pytest.raises(UsageError):
        warm.configure(state("a"), 4)  # beyond warm.max_instances
    limits["value"] = WarmLimits(per_state=1, max_states=2, max_instances=1, idle_seconds=600)
    settle(warm, lambda: ready(warm) == {"a": 1}, "the total cap")
    assert len(instances.removed) == 2
    limits["value"] = WarmLimits(enabled=False)
    settle(warm, lambda: ready(warm) == {}, "off")
    assert [i for i in repo.instances.values() if i.pooled] == []
    with pytest.raises(Conflict):
        warm.configure(state("a"), 1)
    assert warm.claim("a", 0) is None


def test_a_pool_ends_with_its_last_holder_the_automatic_one_stays(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]  # noqa: RUF059
    repo.states["a"] = state("a")
    warm.configure(state("a"), 2, holder="one")
    warm.configure(state("a"), 2, holder="two")
    settle(warm, lambda: ready(warm) == {"a": 2}, "a pool of 2")
    assert warm.release("a", "one")["holders"] == 1  # type: ignore[index]
    warm.used(state("a"), "native", None)
    warm.release("a", "two")
    assert warm.pools() == []
    settle(warm, lambda: ready(warm) == {"a": 1}, "the automatic one")


def test_discard_removes_ready_and_starting(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]  # noqa: RUF059
    repo.states["a"] = state("a")
    warm.used(state("a"), "native", None)
    settle(warm, lambda: ready(warm) == {"a": 1}, "warm")
    first = warm.status()["states"][0]["instance_ids"][0]
    instances.gate.clear()  # the replacement hangs while being started
    assert warm.claim("a", 0) is not None
    settle(warm, lambda: warm.status()["states"][0]["starting"] == 1, "a replacement starting")
    threading.Timer(0.2, instances.gate.set).start()
    del repo.states["a"]
    warm.discard("a")  # waits for the one being started, which is then removed
    assert warm.status()["states"] == []
    assert [i for i in repo.instances.values() if i.pooled] == []
    assert first not in instances.removed  # the claimed one is the user's now


def test_a_claim_waits_only_for_a_start_nobody_else_waits_for(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]  # noqa: RUF059
    repo.states["a"] = state("a")
    instances.gate.clear()
    warm.used(state("a"), "native", None)
    settle(warm, lambda: warm.status()["states"][0]["starting"] == 1, "one starting")
    got: list[Instance | None] = []
    waiter = threading.Thread(target=lambda: got.append(warm.claim("a", 0)))
    waiter.start()
    settle(warm, lambda: warm._pools["a"].waiting == 1, "the first claim waiting")
    assert warm.claim("a", 0) is None  # the second does not queue behind it: it starts its own
    instances.gate.set()
    waiter.join(10)
    assert got and got[0] is not None
    # claimed before a warm one was ready: the state is hot, one more is kept warm for a while
    settle(warm, lambda: ready(warm) == {"a": 2}, "two warm while the state is hot")
    assert warm.status()["states"][0]["hot"] is True


def test_a_burst_of_claims_keeps_more_warm_and_gives_way_to_the_next_state(warm: PoolService) -> None:
    repo, instances, limits = warm.fake  # type: ignore[attr-defined]  # noqa: RUF059
    repo.states["a"] = state("a")
    repo.states["b"] = state("b")
    warm.used(state("a"), "native", None)
    settle(warm, lambda: ready(warm) == {"a": 1}, "one warm")
    for _ in range(3):  # a test suite: claims one after another
        settle(warm, lambda: ready(warm)["a"] >= 1, "a warm one to claim")
        assert warm.claim("a", 0) is not None
    # demand: as many as were claimed in the last minute stay warm, within warm.max_instances (3)
    settle(warm, lambda: ready(warm) == {"a": 3}, "three warm after three claims")
    time.sleep(0.01)
    warm.used(state("b"), "native", None)  # another state is hit: a's burst makes room for it
    settle(warm, lambda: ready(warm) == {"a": 2, "b": 1}, "b warm at the expense of a's burst")
