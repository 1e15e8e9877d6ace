"""What the engine keeps per instance, state or job must go with it (issue 26.5: the engine's
memory grew with every library create/remove cycle). bench/bench_engine_memory.py measures the
engine's RSS and heap over 1000 cycles; these check the bookkeeping itself, on fakes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.locks import StateLocks

Wired = tuple[Services, Fakes]


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired({"warm.enabled": False}) as pair:
        yield pair


def test_nothing_per_instance_stays_after_its_removal(engine: Wired) -> None:
    services, fakes = engine
    for _ in range(20):
        instance = fakes.repo.get_instance(prepare(services, "create table a()")["instance_id"])
        assert instance is not None
        services.instances.remove(instance)
    assert fakes.repo.list_instances() == []
    assert len(services.servers._locks) == 0  # one lock per instance ever made, before


def test_a_state_lock_lives_while_it_is_used() -> None:
    locks = StateLocks()
    held = locks.get("a")
    assert locks.get("a") is held  # the same lock for everyone who uses it at the time
    with held:
        pass
    del held
    assert len(locks._locks) == 0


def test_finished_jobs_leave_nothing_in_the_notifier(engine: Wired) -> None:
    services, _ = engine
    jobs = services.jobs

    def handler(ctx: Any) -> dict[str, Any]:
        ctx.emit("log", stream="engine", text="done")
        return {"ok": True}

    for _ in range(10):
        jobs.submit("prepare", {}, handler)
    deadline = time.monotonic() + 30
    while jobs.active() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not jobs.active()
    assert jobs.notifier._versions == {}
