"""The eviction policy (sqlrs.domain.eviction): which states go, in which order."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlrs.domain.eviction import Entry, choose_victims, reclaimable_bytes, value

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MiB = 1 << 20


def entry(id: str, parent: str | None = None, size: int = MiB, seconds: float = 1.0, age_hours: float = 0.0,
          hits: int = 0, pinned: bool = False) -> Entry:
    return Entry(id, parent, size, seconds, NOW - timedelta(hours=age_hours), hits, pinned)


@st.composite
def forests(draw: st.DrawFn) -> list[Entry]:
    """Random state trees: each state's parent is an earlier state (or none: a base)."""
    count = draw(st.integers(min_value=0, max_value=25))
    entries = []
    for index in range(count):
        parent = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=index - 1))) if index else None
        entries.append(Entry(
            id=f"s{index}",
            parent_id=None if parent is None else f"s{parent}",
            size_bytes=draw(st.integers(min_value=0, max_value=512 * MiB)),
            build_seconds=draw(st.floats(min_value=0, max_value=3600, allow_nan=False)),
            last_used_at=NOW - timedelta(seconds=draw(st.integers(min_value=0, max_value=30 * 86400))),
            hits=draw(st.integers(min_value=0, max_value=1000)),
            pinned=draw(st.booleans()),
        ))
    return entries


def _pinned_closure(entries: list[Entry]) -> set[str]:
    """Pinned states and all their ancestors: never evictable."""
    by_id = {e.id: e for e in entries}
    keep: set[str] = set()
    for e in entries:
        if e.pinned:
            current: Entry | None = e
            while current is not None and current.id not in keep:
                keep.add(current.id)
                current = by_id.get(current.parent_id) if current.parent_id else None
    return keep


@settings(max_examples=300, deadline=None)
@given(forests(), st.integers(min_value=-MiB, max_value=8 << 30))
def test_victims_are_unreferenced_leaves_at_their_turn(entries: list[Entry], needed: int) -> None:
    victims = choose_victims(entries, needed, NOW)
    ids = [v.id for v in victims]
    assert len(ids) == len(set(ids))
    assert not _pinned_closure(entries) & set(ids)
    gone: set[str] = set()
    for victim in victims:
        assert not victim.pinned
        children = {e.id for e in entries if e.parent_id == victim.id}
        assert children <= gone, f"{victim.id} evicted before its children {children - gone}"
        gone.add(victim.id)


@settings(max_examples=300, deadline=None)
@given(forests(), st.integers(min_value=-MiB, max_value=8 << 30))
def test_stops_as_soon_as_enough_is_freed_or_everything_evictable_went(entries: list[Entry], needed: int) -> None:
    victims = choose_victims(entries, needed, NOW)
    freed = sum(v.size_bytes for v in victims)
    if needed <= 0:
        assert victims == []
        return
    if victims:
        assert freed - victims[-1].size_bytes < needed  # the last one was still needed
    if freed < needed:  # not enough: then nothing else could have gone
        evictable = set(e.id for e in entries) - _pinned_closure(entries)
        assert {v.id for v in victims} == evictable
        assert freed == reclaimable_bytes(entries)


@settings(max_examples=200, deadline=None)
@given(forests(), st.integers(min_value=1, max_value=4 << 30), st.integers(min_value=1, max_value=4 << 30))
def test_a_larger_need_extends_the_same_order(entries: list[Entry], a: int, b: int) -> None:
    small, large = sorted((a, b))
    first = choose_victims(entries, small, NOW)
    second = choose_victims(entries, large, NOW)
    assert second[: len(first)] == first


@settings(max_examples=200, deadline=None)
@given(forests(), st.integers(min_value=1, max_value=4 << 30))
def test_the_first_victim_is_the_least_valuable_leaf(entries: list[Entry], needed: int) -> None:
    victims = choose_victims(entries, needed, NOW)
    parents = {e.parent_id for e in entries}
    leaves = [e for e in entries if not e.pinned and e.id not in parents]
    if not leaves:
        assert victims == []
        return
    assert value(victims[0], NOW) == min(value(e, NOW) for e in leaves)


@given(st.integers(min_value=1, max_value=1 << 40), st.floats(min_value=0, max_value=1e5),
       st.floats(min_value=0, max_value=1e4), st.integers(min_value=0, max_value=10**6))
def test_value_weighs_rebuild_time_size_and_recency(size: int, seconds: float, age: float, hits: int) -> None:
    base = Entry("a", None, size, seconds, NOW - timedelta(hours=age), hits)
    v = value(base, NOW)
    assert math.isfinite(v)  # even for months-old states (no underflow to log 0)
    assert value(Entry("a", None, size, seconds + 10, base.last_used_at, hits), NOW) > v  # dearer to rebuild
    assert value(Entry("a", None, size * 2 + 8192, seconds, base.last_used_at, hits), NOW) < v  # bigger
    assert value(Entry("a", None, size, seconds, base.last_used_at - timedelta(hours=1), hits), NOW) < v  # older
    assert value(Entry("a", None, size, seconds, base.last_used_at, hits + 1), NOW) > v  # reused more


def test_cheap_big_and_stale_goes_before_expensive_small_and_fresh() -> None:
    entries = [
        entry("base", size=40 * MiB, seconds=2),
        entry("cheap-big-old", "base", size=500 * MiB, seconds=3, age_hours=48),
        entry("dear-small-new", "base", size=5 * MiB, seconds=600),
        entry("mid", "base", size=100 * MiB, seconds=30, age_hours=1),
    ]
    order = [v.id for v in choose_victims(entries, 10 << 30, NOW)]
    assert order[0] == "cheap-big-old"
    assert order.index("mid") < order.index("dear-small-new")
    assert order[-1] == "base"  # a parent goes only once its children are gone


def test_only_what_is_needed() -> None:
    entries = [entry("base"), entry("a", "base", size=10 * MiB, age_hours=5), entry("b", "base", size=10 * MiB)]
    assert [v.id for v in choose_victims(entries, 1, NOW)] == ["a"]
    assert [v.id for v in choose_victims(entries, 15 * MiB, NOW)] == ["a", "b"]
    assert choose_victims(entries, 0, NOW) == []


def test_instances_pin_their_state_and_its_ancestors() -> None:
    entries = [entry("base"), entry("a", "base"), entry("a1", "a", pinned=True), entry("b", "base")]
    assert [v.id for v in choose_victims(entries, 100 * MiB, NOW)] == ["b"]
    assert reclaimable_bytes(entries) == MiB
    assert reclaimable_bytes([entry("only", pinned=True)]) == 0
    assert reclaimable_bytes([]) == 0


def test_a_parent_becomes_a_candidate_when_its_last_child_goes() -> None:
    entries = [entry("base", size=MiB), entry("a", "base", size=MiB), entry("a1", "a", size=MiB)]
    assert [v.id for v in choose_victims(entries, 3 * MiB, NOW)] == ["a1", "a", "base"]
