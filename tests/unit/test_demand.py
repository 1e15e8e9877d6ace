"""The idle policy (sqlrs.domain.demand) on a fake clock: which states are busy, which keep a small
idle level once nobody is testing, which keep nothing (superseded, or not used recently)."""

from __future__ import annotations

import pytest

from sqlrs.domain.demand import QUIET_SECONDS, Demand, IdlePolicy, Level, Need

POLICY = IdlePolicy(states=2, seconds=300.0)
SAKILA = "initdb\nsakila.sql"
SHOP_HEAD = "initdb\n0001\n0002\n0007"
SHOP_0004 = "initdb\n0001\n0004"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def claims(demand: Demand, state_id: str, shape: str | None, count: int, now: float) -> None:
    for _ in range(count):
        demand.claim(state_id, shape, now, POLICY)


def test_a_burst_of_claims_is_busy_until_it_has_been_quiet_then_idle(clock: Clock) -> None:
    demand = Demand()
    claims(demand, "a", SAKILA, 5, clock.now)
    assert demand.need("a", clock.now, POLICY) == Need(Level.BUSY)
    assert demand.need("a", clock.advance(QUIET_SECONDS - 1), POLICY).level is Level.BUSY
    assert demand.need("a", clock.advance(1), POLICY) == Need(Level.IDLE)
    assert demand.need("never-claimed", clock.now, POLICY) == Need(Level.NONE)


def test_a_session_keeps_its_state_busy_until_it_ends_and_its_end_counts_as_use(clock: Clock) -> None:
    demand = Demand()
    demand.begin("pytest-gw0", "a", SAKILA, clock.now, POLICY)
    demand.begin("pytest-gw1", "a", SAKILA, clock.now, POLICY)
    claims(demand, "a", SAKILA, 3, clock.now)
    clock.advance(10 * QUIET_SECONDS)  # long tests: no claim for a while, still busy
    assert demand.need("a", clock.now, POLICY).level is Level.BUSY
    assert demand.end("pytest-gw0", clock.now) == ["a"]
    assert demand.need("a", clock.advance(QUIET_SECONDS), POLICY).level is Level.BUSY  # gw1 still runs
    assert demand.end("pytest-gw1", clock.now) == ["a"]
    assert demand.end("pytest-gw1", clock.now) == []  # ending twice is harmless
    assert demand.sessions() == {}
    assert demand.need("a", clock.advance(QUIET_SECONDS - 1), POLICY).level is Level.BUSY
    assert demand.need("a", clock.advance(1), POLICY).level is Level.IDLE


def test_only_the_most_recently_used_states_keep_an_idle_level(clock: Clock) -> None:
    demand = Demand()
    for state_id, shape in (("sakila", SAKILA), ("head", SHOP_HEAD), ("v0004", SHOP_0004)):
        claims(demand, state_id, shape, 2, clock.advance(1))
    clock.advance(QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"sakila": Level.NONE, "head": Level.IDLE, "v0004": Level.IDLE}
    claims(demand, "sakila", SAKILA, 1, clock.advance(1))  # used again: busy, and newest
    assert demand.levels(clock.now, POLICY) == {"sakila": Level.BUSY, "head": Level.IDLE, "v0004": Level.IDLE}
    clock.advance(QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"sakila": Level.IDLE, "head": Level.NONE, "v0004": Level.IDLE}
    assert demand.levels(clock.now, IdlePolicy(states=0))["sakila"] is Level.NONE


def test_an_idle_state_keeps_its_level_for_the_idle_seconds_only(clock: Clock) -> None:
    demand = Demand()
    claims(demand, "a", SAKILA, 1, clock.now)
    assert demand.need("a", clock.advance(POLICY.seconds), POLICY).level is Level.IDLE
    assert demand.need("a", clock.advance(1), POLICY).level is Level.NONE


def test_a_state_superseded_by_a_newer_version_of_its_chain_keeps_nothing(clock: Clock) -> None:
    demand = Demand()
    claims(demand, "head-v1", SHOP_HEAD, 10, clock.now)
    claims(demand, "head-v2", SHOP_HEAD, 1, clock.advance(QUIET_SECONDS + 1))  # a migration was edited
    assert demand.levels(clock.now, POLICY) == {"head-v1": Level.NONE, "head-v2": Level.BUSY}
    clock.advance(QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"head-v1": Level.NONE, "head-v2": Level.IDLE}
    # the older version used again (a branch checked out again): it is newest, the other superseded
    claims(demand, "head-v1", SHOP_HEAD, 1, clock.advance(1))
    clock.advance(QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"head-v1": Level.IDLE, "head-v2": Level.NONE}


def test_a_busy_state_is_never_taken_for_superseded(clock: Clock) -> None:
    demand = Demand()
    demand.begin("old-suite", "head-v1", SHOP_HEAD, clock.now, POLICY)
    claims(demand, "head-v2", SHOP_HEAD, 1, clock.advance(1))
    clock.advance(5 * QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"head-v1": Level.BUSY, "head-v2": Level.IDLE}


def test_states_of_unknown_shape_are_never_superseded(clock: Clock) -> None:
    demand = Demand()
    claims(demand, "a", None, 1, clock.now)
    claims(demand, "b", None, 1, clock.advance(1))
    clock.advance(QUIET_SECONDS)
    assert demand.levels(clock.now, POLICY) == {"a": Level.IDLE, "b": Level.IDLE}


def test_a_session_expects_the_claims_of_the_states_previous_burst(clock: Clock) -> None:
    demand = Demand()
    demand.begin("run-1", "a", SAKILA, clock.now, POLICY)
    claims(demand, "a", SAKILA, 22, clock.now)
    assert demand.need("a", clock.now, POLICY) == Need(Level.BUSY, 22)
    demand.end("run-1", clock.now)
    assert demand.need("a", clock.now, POLICY) == Need(Level.BUSY, 0)  # no session: nothing expected
    clock.advance(120)  # the developer reads the failures, edits, runs again
    assert demand.begin("run-2", "a", SAKILA, clock.now, POLICY) == Need(Level.BUSY, 22)
    claims(demand, "a", SAKILA, 5, clock.now)
    assert demand.need("a", clock.now, POLICY).expected == 22
    claims(demand, "a", SAKILA, 25, clock.now)
    assert demand.need("a", clock.now, POLICY).expected == 30  # this burst outgrew the last one


def test_a_forgotten_state_keeps_nothing(clock: Clock) -> None:
    demand = Demand()
    demand.begin("s", "a", SAKILA, clock.now, POLICY)
    demand.forget("a")
    assert demand.need("a", clock.now, POLICY) == Need(Level.NONE)
    assert demand.sessions() == {}


def test_a_session_that_is_never_ended_lapses_once_its_state_is_unused_for_the_idle_seconds(clock: Clock) -> None:
    demand = Demand()
    demand.begin("forgotten", "a", SAKILA, clock.now, POLICY)  # a client that never calls end
    claims(demand, "a", SAKILA, 1, clock.advance(POLICY.seconds))  # still claiming: still busy
    assert demand.need("a", clock.advance(POLICY.seconds), POLICY).level is Level.BUSY
    assert demand.need("a", clock.advance(1), POLICY).level is Level.NONE  # nothing kept for it any more
