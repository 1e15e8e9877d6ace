"""Warm instances (services/pool.py) wired on fakes, driven turn by turn (`work_once`) on the
fake clock: filling, claiming, idle expiry and the bounds, with real instance bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.entrypoints.engine.bootstrap import Services

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
