"""Runners kept between builds (services/states/steps/idle_runners.py): taken by the next build of
their project, stopped when idle too long, beyond the bound, or with the engine."""

from __future__ import annotations

from sqlrs.services.states.steps.idle_runners import IdleRunners


class Runner:
    def __init__(self) -> None:
        self.alive = True

    def close(self) -> None:
        self.alive = False


def runners(now: list[float], most: int = 4) -> IdleRunners:
    return IdleRunners(idle_seconds=120.0, most=most, clock=lambda: now[0], timers=False)


def test_a_runner_is_taken_once_by_its_key() -> None:
    now = [0.0]
    idle = runners(now)
    runner = Runner()
    idle.put("shop", runner)
    assert idle.take("other") is None
    assert idle.take("shop") is runner and runner.alive
    assert idle.take("shop") is None and len(idle) == 0


def test_idle_runners_stop_after_the_idle_time_and_beyond_the_bound() -> None:
    now = [0.0]
    idle = runners(now, most=2)
    first, second, third = Runner(), Runner(), Runner()
    idle.put("a", first)
    now[0] = 60.0
    idle.put("b", second)
    now[0] = 100.0
    idle.put("c", third)  # three wait, two may: the oldest goes
    assert not first.alive and second.alive and third.alive
    now[0] = 180.0  # b waited 120 s
    idle.close_expired()
    assert not second.alive and third.alive and len(idle) == 1
    now[0] = 220.0
    assert idle.take("c") is None and not third.alive  # expired when asked for


def test_a_dead_runner_is_not_handed_out_and_the_engine_stop_stops_all() -> None:
    now = [0.0]
    idle = runners(now)
    dead, kept, late = Runner(), Runner(), Runner()
    idle.put("dead", dead)
    dead.alive = False
    assert idle.take("dead") is None
    idle.put("kept", kept)
    idle.close()
    assert not kept.alive and len(idle) == 0
    idle.put("late", late)  # a build that ends while the engine stops
    assert not late.alive and len(idle) == 0


def test_a_second_runner_for_a_key_replaces_the_first() -> None:
    now = [0.0]
    idle = runners(now)
    old, new = Runner(), Runner()
    idle.put("shop", old)
    idle.put("shop", new)
    assert not old.alive and idle.take("shop") is new
