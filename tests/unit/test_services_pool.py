"""Warm instances (services/instances/pool.py) wired on fakes, driven turn by turn (`work_once`) on the
fake clock: filling, claiming, idle expiry and the bounds, with real instance bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.domain.demand import QUIET_SECONDS
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.instances.warm_set import HOT_SECONDS

Wired = tuple[Services, Fakes]
IDLE = 600


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired({"warm.per_state": 1, "warm.max_states": 4, "warm.max_instances": 8,
                "warm.idle_seconds": IDLE}) as pair:
        yield pair


def settle(services: Services) -> None:
    """Let the pool do what it wants to do now (each turn starts or removes something)."""
    for _ in range(20):
        if not services.pool.work_once():
            return
    raise AssertionError(f"the pool never settles: {services.pool.status()}")


def warm(fakes: Fakes, state_id: str | None = None) -> list[str]:
    return [i.id for i in fakes.repo.list_instances(state_id) if i.pooled]


def test_a_used_state_gets_a_started_warm_instance(engine: Wired) -> None:
    services, fakes = engine
    state_id = prepare(services, "create table a()")["state_id"]
    assert warm(fakes) == []  # nothing started in the request's thread
    settle(services)
    [spare] = warm(fakes, state_id)
    assert spare in [server.spec.instance_id for server in fakes.runtime.running()]
    assert services.layout.abs(f"instances/{spare}").is_dir()
    assert services.pool.status()["instances"] == 1


def test_a_hit_claims_the_warm_instance_and_a_replacement_is_started(engine: Wired) -> None:
    services, fakes = engine
    state_id = prepare(services, "create table a()")["state_id"]
    settle(services)
    [spare] = warm(fakes)
    starts = len(fakes.runtime.started)
    result = prepare(services, "create table a()", name="mine", ttl_seconds=60)
    assert result["instance_id"] == spare and len(fakes.runtime.started) == starts  # nothing started
    claimed = fakes.repo.get_instance(spare)
    assert claimed is not None and not claimed.pooled and claimed.name == "mine" and claimed.ttl_seconds == 60
    settle(services)
    [replacement] = warm(fakes, state_id)
    assert replacement != spare and len(fakes.runtime.started) == starts + 1


def test_warm_instances_of_a_state_unused_for_the_idle_time_are_removed(engine: Wired) -> None:
    services, fakes = engine
    prepare(services, "create table a()")
    settle(services)
    [spare] = warm(fakes)
    fakes.clock.advance(IDLE - 1)
    settle(services)
    assert warm(fakes) == [spare]
    fakes.clock.advance(2)
    settle(services)
    assert warm(fakes) == [] and fakes.repo.get_instance(spare) is None
    assert spare not in [server.spec.instance_id for server in fakes.runtime.running()]
    assert not services.layout.abs(f"instances/{spare}").exists()


def test_the_bounds_keep_the_most_recent_states_and_the_total(engine: Wired) -> None:
    services, fakes = engine
    services.config.update({"warm.max_states": 2})
    services.pool.wake()
    states = []
    for name in "abc":
        states.append(prepare(services, f"create table {name}()")["state_id"])
        fakes.clock.advance(1)
    settle(services)
    assert sorted(i.state_id for i in fakes.repo.list_instances() if i.pooled) == sorted(states[1:])
    services.config.update({"warm.max_instances": 1})
    services.pool.wake()
    settle(services)
    assert [i.state_id for i in fakes.repo.list_instances() if i.pooled] == [states[2]]
    services.config.update({"warm.enabled": False})
    services.pool.wake()
    settle(services)
    assert warm(fakes) == []
    # the user instances were never touched
    assert len([i for i in fakes.repo.list_instances() if not i.pooled]) == 3


def test_an_explicit_pool_is_filled_to_its_size_and_drained_on_release(engine: Wired) -> None:
    services, fakes = engine
    state_id = prepare(services, "create table a()", build_only=True)["state_id"]
    state = fakes.repo.get_state(state_id)
    assert state is not None
    services.pool.configure(state, 3, holder="h1")
    settle(services)
    assert len(warm(fakes, state_id)) == 3
    services.pool.release(state_id, "h1")
    settle(services)
    assert warm(fakes, state_id) == [] and fakes.runtime.running() == []


def test_a_failing_start_is_reported_and_retried_after_a_back_off(engine: Wired) -> None:
    services, fakes = engine
    state_id = prepare(services, "create table a()", build_only=True)["state_id"]
    state = fakes.repo.get_state(state_id)
    assert state is not None
    services.pool.configure(state, 1, holder="h1")
    fakes.runtime.fail_start = 1
    starts = len(fakes.runtime.started)
    settle(services)
    assert warm(fakes) == [] and "exited during start-up" in (services.pool.get(state_id)["error"] or "")
    fakes.clock.advance(1)  # within the back-off (2 s after a first failure): no new try
    settle(services)
    assert warm(fakes) == [] and len(fakes.runtime.started) == starts  # (a failed start is not counted)
    fakes.clock.advance(2)
    settle(services)
    assert len(warm(fakes, state_id)) == 1 and services.pool.get(state_id)["error"] is None


# -- demand: what stays once nobody is testing (sqlrs.domain.demand) ---------------------------------
def test_after_a_burst_the_warm_instances_fall_back_to_the_idle_level(engine: Wired) -> None:
    services, fakes = engine
    for _ in range(5):  # a suite's claims, back to back
        state_id = prepare(services, "create table a()")["state_id"]
        settle(services)
    assert len(warm(fakes, state_id)) == 4  # as many as were claimed from it in the last minute
    fakes.clock.advance(QUIET_SECONDS + 1)
    settle(services)
    assert len(warm(fakes, state_id)) == 1  # warm.per_state
    assert services.demand.status()["idle"] == [state_id]


def test_a_superseded_state_keeps_no_warm_instance(engine: Wired) -> None:
    services, fakes = engine
    old = prepare(services, "create table a()")["state_id"]
    fakes.clock.advance(QUIET_SECONDS + 1)
    settle(services)
    assert len(warm(fakes, old)) == 1
    new = prepare(services, "create table a(edited int)")["state_id"]  # the same step, edited
    settle(services)
    assert warm(fakes, old) == [] and len(warm(fakes, new)) >= 1
    assert not [s for s in fakes.runtime.running() if fakes.repo.get_instance(s.spec.instance_id) is None]


def test_only_the_most_recently_used_states_keep_warm_instances_when_idle(engine: Wired) -> None:
    services, fakes = engine
    services.config.update({"warm.idle_states": 2})
    states = []
    for k in range(3):  # three chains of different lengths: three shapes
        states.append(prepare(services, *[f"create table t{k}_{i}()" for i in range(k + 1)])["state_id"])
        fakes.clock.advance(1)
    settle(services)
    assert all(warm(fakes, state_id) for state_id in states)
    fakes.clock.advance(QUIET_SECONDS + 1)
    settle(services)
    assert [len(warm(fakes, state_id)) for state_id in states] == [0, 1, 1]


def test_a_session_holds_its_state_busy_and_starts_at_its_previous_burst(engine: Wired) -> None:
    services, fakes = engine
    state_id = prepare(services, "create table a()", build_only=True)["state_id"]
    services.demand.begin("suite-1", state_id)
    for _ in range(6):
        prepare(services, "create table a()")
    services.demand.end("suite-1")
    fakes.clock.advance(HOT_SECONDS + QUIET_SECONDS)  # the next run comes minutes later
    settle(services)
    assert len(warm(fakes, state_id)) == 1
    assert services.demand.begin("suite-2", state_id)["expected"] == 6
    settle(services)
    assert len(warm(fakes, state_id)) == 6  # started before its first claim
    fakes.clock.advance(3 * QUIET_SECONDS)
    settle(services)
    assert len(warm(fakes, state_id)) == 6  # held: no claim for a while, still busy
    services.demand.end("suite-2")
    fakes.clock.advance(QUIET_SECONDS)
    settle(services)
    assert len(warm(fakes, state_id)) == 1
