"""Rules around manual snapshots: unique ids, never evicted, requests with `from_state`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sqlrs.domain import keys
from sqlrs.domain.errors import UsageError
from sqlrs.domain.eviction import choose_victims, reclaimable_bytes
from sqlrs.domain.model import State, StateKind
from sqlrs.services.requests import parse_prepare, parse_snapshot
from sqlrs.services.states.cache import CacheService, Limits
from sqlrs.services.states.catalog import StateCatalog

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def state(state_id: str, parent: str | None, kind: StateKind, size: int = 1 << 20, seconds: float = 0.1) -> State:
    old = NOW - timedelta(days=30)  # stale, cheap and big: the least valuable there is
    return State(id=state_id, parent_id=parent, base_id="b", step_hash=None, kind=kind, runtime="native",
                 source=state_id, data_path=f"states/{state_id}", size_bytes=size, build_seconds=seconds,
                 created_at=old, last_used_at=old)


class Repo:
    def __init__(self, states: list[State]):
        self.states = states

    def list_states(self) -> list[State]:
        return self.states

    def list_instances(self, state_id: str | None = None) -> list[Any]:
        return []



class NoJobs:
    def running_tasks(self) -> dict[str, list[Any]]:
        return {}


class Clock:
    def now(self) -> datetime:
        return NOW


def cache_of(states: list[State]) -> CacheService:
    catalog = StateCatalog(Repo(states), store=None, layout=None, running=NoJobs())  # type: ignore[arg-type]
    return CacheService(catalog, clock=Clock(), limits=lambda: Limits(0, 0))  # type: ignore[arg-type]


def test_snapshot_ids_are_unique_children_of_their_parent() -> None:
    first, second = keys.snapshot_id("p" * 64, "n1"), keys.snapshot_id("p" * 64, "n2")
    assert first != second
    assert keys.snapshot_id("p" * 64, "n1") == first
    assert keys.snapshot_id("q" * 64, "n1") != first


def test_snapshots_are_never_evicted_but_what_is_built_on_them_is() -> None:
    states = [state("base", None, StateKind.BASE), state("step", "base", StateKind.PSQL),
              state("snap", "step", StateKind.SNAPSHOT, size=1 << 30),
              state("onsnap", "snap", StateKind.PSQL), state("other", "step", StateKind.PSQL)]
    entries = cache_of(states).entries()
    victims = [entry.id for entry in choose_victims(entries, 1 << 62, NOW)]
    assert set(victims) == {"onsnap", "other"}  # the snapshot and its ancestors stay
    assert reclaimable_bytes(entries) == 2 << 20


def test_from_state_allows_a_chain_without_steps() -> None:
    request = parse_prepare({"steps": [], "from_state": "abc123"})
    assert request.from_state == "abc123" and request.steps == ()
    with pytest.raises(UsageError, match="nothing to prepare"):
        parse_prepare({"steps": []})
    with pytest.raises(UsageError, match="invalid state id"):
        parse_prepare({"steps": [], "from_state": "not-hex"})


def test_snapshot_requests() -> None:
    assert parse_snapshot({"instance": "dev", "name": "before"}).name == "before"
    for bad in ({}, {"instance": ""}, {"instance": "dev", "name": "a/b"}, {"instance": "dev", "x": 1}):
        with pytest.raises(UsageError):
            parse_snapshot(bad)
