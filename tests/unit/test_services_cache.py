"""Cache eviction (services/states/cache.py) wired on fakes: real bytes in a temporary store, the fake
clock for recency, no PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fakes import Fakes, job_context, prepare, wired

from sqlrs.domain.errors import NoSpace
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.states.cache import DEFAULT_MAX_BYTES, Limits

Wired = tuple[Services, Fakes]
PAD = 400_000
DAY = 24 * 3600.0


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired({"cache.capacity.reserve_bytes": 0}) as pair:
        yield pair


def cap(services: Services, max_bytes: int) -> None:
    services.config.update({"cache.capacity.max_bytes": max_bytes})


def test_state_sizes_are_their_increments_over_the_parent(engine: Wired) -> None:
    services, fakes = engine
    result = prepare(services, f"PAD {PAD}", f"PAD {PAD} again", build_only=True)
    final = fakes.repo.get_state(result["state_id"])
    assert final is not None
    parent = fakes.repo.get_state(final.parent_id or "")
    assert parent is not None
    assert PAD <= final.size_bytes < PAD + 70_000 and PAD <= parent.size_bytes < PAD + 70_000
    # the whole cache counts the shared bytes once: about two pads, not three
    assert 2 * PAD <= services.cache.cache_bytes() < 2 * PAD + 200_000


def test_over_the_cap_the_least_recently_used_unreferenced_leaf_goes(engine: Wired) -> None:
    services, fakes = engine
    old = prepare(services, f"PAD {PAD} old", build_only=True)["state_id"]
    fakes.clock.advance(DAY)
    new = prepare(services, f"PAD {PAD} new", build_only=True)["state_id"]
    base = fakes.repo.get_state(new).parent_id
    cap(services, services.cache.cache_bytes() - PAD // 2)
    assert services.cache.enforce() == [old]
    assert {state.id for state in fakes.repo.list_states()} == {base, new}
    assert sorted(p.name for p in services.layout.states_dir.iterdir()) == sorted([base, new])
    assert services.cache.enforce() == []  # within bounds now: nothing more goes


def test_a_state_with_an_instance_is_kept_and_a_newer_one_goes_instead(engine: Wired) -> None:
    services, fakes = engine
    used = prepare(services, f"PAD {PAD} used")["state_id"]  # its instance pins it
    fakes.clock.advance(DAY)
    idle = prepare(services, f"PAD {PAD} idle", build_only=True)["state_id"]
    cap(services, services.cache.cache_bytes() - PAD // 2)
    assert services.cache.enforce() == [idle]
    assert fakes.repo.get_state(used) is not None


def test_when_eviction_cannot_make_room_nothing_is_evicted(engine: Wired) -> None:
    services, fakes = engine
    prepare(services, f"PAD {PAD} a")
    idle = prepare(services, f"PAD {PAD} b", build_only=True)["state_id"]
    states = len(fakes.repo.list_states())
    cap(services, PAD // 2)  # needs more than the one evictable state frees
    with pytest.raises(NoSpace) as caught:
        services.cache.enforce()
    assert caught.value.details["reason"] == "max_bytes"
    assert len(fakes.repo.list_states()) == states and fakes.repo.get_state(idle) is not None


def test_a_prepare_evicts_after_it_commits_and_says_so(engine: Wired) -> None:
    services, fakes = engine
    old = prepare(services, f"PAD {PAD} old", build_only=True)["state_id"]
    fakes.clock.advance(DAY)
    cap(services, services.cache.cache_bytes() + PAD // 2)  # room for half of the next state
    ctx = job_context(services)
    from fakes import command

    from sqlrs.services.requests import PrepareRequest

    services.prepare.run(ctx, PrepareRequest(steps=(command(f"PAD {PAD} new"),), build_only=True))
    assert fakes.repo.get_state(old) is None
    texts = [event.data.get("text", "") for event in fakes.repo.events_after(ctx.job.id, 0)]
    assert any(f"evicted state {old[:12]}" in text for text in texts)
    assert services.cache.evicted_states == 1 and services.cache.evicted_bytes >= PAD


def test_a_clone_that_finds_the_store_full_evicts_and_goes_on(engine: Wired) -> None:
    """Issue 26: a copy that failed with ENOSPC evicted nothing although evictable states existed."""
    services, fakes = engine
    old = prepare(services, f"PAD {PAD} old", build_only=True)["state_id"]
    fakes.clock.advance(DAY)
    fakes.store.capacity = services.cache.cache_bytes() + (1 << 20)  # nothing free
    fakes.store.full_clones = 1
    new = prepare(services, f"PAD {PAD} new", build_only=True)["state_id"]
    states = {state.id for state in fakes.repo.list_states()}
    assert new in states and old not in states  # the old chain's state made room
    assert fakes.store.full_clones == 0


def test_a_full_store_with_nothing_to_evict_fails_with_a_clear_reason(engine: Wired) -> None:
    services, fakes = engine
    prepare(services, f"PAD {PAD} used")  # its instance pins its state
    fakes.store.capacity = services.cache.cache_bytes() + (1 << 20)
    fakes.store.full_clones = 2
    with pytest.raises(NoSpace, match="No space left on device"):
        prepare(services, f"PAD {PAD} more", build_only=True)


def test_the_cache_is_checked_after_the_build_s_scratch_is_gone(engine: Wired) -> None:
    """Issue 26: the free-space check after a commit counted the build's own scratch copy."""
    services, _fakes = engine
    seen: list[list[str]] = []
    check = services.cache.after_commit
    def after_commit(ctx: Any, state: Any) -> Any:
        seen.append(sorted(p.name for p in services.layout.scratch_dir.iterdir()))
        return check(ctx, state)

    services.cache.after_commit = after_commit  # type: ignore[method-assign]
    prepare(services, "create table a()", "create table b()")
    assert seen == [[]]

def test_the_default_cap_is_a_tenth_of_the_filesystem_and_never_fails_a_job(engine: Wired) -> None:
    services, fakes = engine
    limits = services.cache.limits()
    assert limits == Limits(min(DEFAULT_MAX_BYTES, fakes.store.capacity // 10), 0, default_cap=True)
    assert services.cache.usage()["max_bytes_source"] == "default"
    used = prepare(services, f"PAD {PAD} used")["state_id"]  # its instance pins it
    fakes.clock.advance(DAY)
    idle = prepare(services, f"PAD {PAD} idle", build_only=True)["state_id"]
    fakes.store.capacity = 10 * (services.cache.cache_bytes() - PAD // 2)  # a store where the default is too small
    assert services.cache.enforce() == [idle]  # evicted as under a configured cap
    fakes.store.capacity = 10 * PAD // 2  # the states in use alone outgrow the default cap
    assert services.cache.enforce() == []  # nothing can go, and that is no error
    more = prepare(services, f"PAD {PAD} more")  # a job still builds
    assert {used, more["state_id"]} <= {state.id for state in fakes.repo.list_states()}
    cap(services, PAD // 2)  # the same bound configured: a hard one
    with pytest.raises(NoSpace):
        services.cache.enforce()
