"""Which steps a build keeps (domain/checkpoints.py), as a rule and as the builder applies it on the
fakes: step costs come from the fake clock ("TAKES n" in a step), the store's keep cost from the fake
store's clone time. No PostgreSQL, no daemons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Fakes, command, job_context, wired

from sqlrs.domain.checkpoints import PAYBACK, CheckpointPolicy, Reason, branch_point
from sqlrs.domain.errors import NotFound
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.requests import PrepareRequest

Wired = tuple[Services, Fakes]


def test_the_last_step_the_one_before_it_and_branch_points_are_kept_whatever_they_cost() -> None:
    policy = CheckpointPolicy()
    assert policy.forced(9, 9, branch_point=False) == Reason.LAST
    assert policy.forced(8, 9, branch_point=False) == Reason.BEFORE_LAST
    assert policy.forced(4, 9, branch_point=True) == Reason.BRANCH
    assert policy.forced(4, 9, branch_point=False) is None


def test_a_step_is_kept_when_the_replay_it_saves_pays_for_keeping_it() -> None:
    policy = CheckpointPolicy(payback=4.0)
    assert policy.pays(replay_seconds=2.0, keep_seconds=0.5)
    assert not policy.pays(replay_seconds=1.9, keep_seconds=0.5)
    assert policy.pays(replay_seconds=0.01, keep_seconds=0.0)  # a free keep always pays


def test_the_branch_point_is_the_deepest_known_state_past_the_deepest_kept_one() -> None:
    #                 base   1      2      3      4      5
    known = [False, True, True, False, False, False]
    kept = [True, False, False, False, False, False]
    assert branch_point(known, kept) == 2
    assert branch_point(known, [True, False, False, True, False, False]) is None  # kept deeper: no branch
    assert branch_point([False, True, True], [True, False, False]) is None  # the chain ends there: it is the last
    assert branch_point([False] * 4, [True, False, False, False]) is None


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired() as pair:
        yield pair


def build(services: Services, *sql: str) -> list[dict[str, object]]:
    """Build the chain; its plan afterwards (every row, with what is kept)."""
    steps = tuple(command(text) for text in sql)
    services.prepare.run(job_context(services), PrepareRequest(steps=steps, build_only=True))
    return services.prepare.run(job_context(services), PrepareRequest(steps=steps, plan_only=True))["plan"]


def kept(plan: list[dict[str, object]]) -> list[int]:
    return [int(str(row["index"])) for row in plan if row["checkpoint"]]


def test_cheap_steps_on_an_expensive_store_keep_only_what_must_be_kept(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 1.0  # a full copy per state
    plan = build(services, *[f"step {i} TAKES 0.1" for i in range(1, 13)])
    assert kept(plan) == [0, 11, 12]  # the base, the one before the last, the last


def test_a_costly_step_is_kept_right_after_it_runs(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 0.25
    costs = [0.1, 0.1, 5.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]  # step 3 loads the data
    plan = build(services, *[f"step {i} TAKES {cost}" for i, cost in enumerate(costs, 1)])
    assert 3 in kept(plan) and {1, 2, 4} & set(kept(plan)) == set()


def test_on_a_cheap_store_checkpoints_come_every_few_keep_costs_of_replay(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 0.05
    plan = build(services, *[f"step {i} TAKES 0.1" for i in range(1, 41)])
    middle = [index for index in kept(plan) if 0 < index < 39]
    # the builder's estimate of a keep includes its share of the sync: at least the clone itself
    assert len(middle) >= 4
    gaps = [b - a for a, b in zip([0, *middle], middle, strict=False)]
    assert all(gap * 0.1 >= PAYBACK * 0.05 - 1e-9 for gap in gaps)


def test_an_edit_in_the_middle_keeps_the_state_before_it_and_replays_from_a_kept_state(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 1.0
    sql = [f"step {i} TAKES 0.1" for i in range(1, 11)]
    build(services, *sql)
    fakes.runtime.servers.clear()
    edited = [*sql[:5], "step 6 edited TAKES 0.1", *sql[6:]]
    before = services.prepare.run(job_context(services), PrepareRequest(steps=tuple(command(s) for s in edited),
                                                                         plan_only=True))["plan"]
    assert before[5]["keep"] == Reason.BRANCH and not before[5]["cached"]
    plan = build(services, *edited)
    assert 5 in kept(plan)
    # what the edited chain's last state holds: every step once, in order, the edit included
    final = services.repo.get_state(str(plan[-1]["state_id"]))
    assert final is not None
    applied = (services.layout.abs(final.data_path) / "applied.sql").read_text().splitlines()
    assert applied == edited


def test_an_unkept_state_is_named_as_such_when_asked_for(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 1.0
    plan = build(services, *[f"step {i} TAKES 0.1" for i in range(1, 6)])
    middle = str(plan[2]["state_id"])
    assert plan[2]["cached"] and not plan[2]["checkpoint"]
    for find in (services.inventory.find_state, services.compare.find):
        with pytest.raises(NotFound, match=f"state {middle[:12]} is not kept") as caught:
            find(middle[:12])
        assert caught.value.hint is not None and "prepare the steps up to it" in caught.value.hint
    with pytest.raises(NotFound, match="no state matches"):
        services.inventory.find_state("feedc0ffee00")
    assert services.inventory.find_state(str(plan[-1]["state_id"])[:12]).id == plan[-1]["state_id"]
