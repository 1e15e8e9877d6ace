"""PrepareService wired by the composition root on fakes (tests/fakes.py): planning, building a
chain, hits, and a failed step leaving nothing behind. No PostgreSQL, no daemons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import Fakes, command, job_context, prepare, wired

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import InstanceStatus, TaskStatus
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.requests import PrepareRequest

Wired = tuple[Services, Fakes]


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired() as pair:
        yield pair


def plan(services: Services, *sql: str) -> list[dict[str, object]]:
    result = services.prepare.run(job_context(services), PrepareRequest(steps=tuple(command(s) for s in sql),
                                                                        plan_only=True))
    return result["plan"]


def applied(services: Services, state_id: str) -> list[str]:
    state = services.repo.get_state(state_id)
    assert state is not None
    return (services.layout.abs(state.data_path) / "applied.sql").read_text().splitlines()


def leftovers(services: Services) -> list[Path]:
    layout = services.layout
    return [*layout.scratch_dir.iterdir(), *layout.tmp_dir.iterdir()]


def test_a_cold_plan_builds_everything_and_builds_nothing_yet(engine: Wired) -> None:
    services, fakes = engine
    items = plan(services, "create table a()", "create table b()")
    assert [(item["kind"], item["cached"]) for item in items] == [("base", False), ("command", False),
                                                                   ("command", False)]
    assert [item["parent_id"] for item in items[1:]] == [items[0]["state_id"], items[1]["state_id"]]
    assert fakes.repo.list_states() == [] and fakes.runtime.started == []


def test_building_a_chain_commits_one_state_per_step_on_its_parent(engine: Wired) -> None:
    services, fakes = engine
    result = prepare(services, "create table a()", "create table b()")
    states = {state.id: state for state in fakes.repo.list_states()}
    assert len(states) == 3
    final = states[result["state_id"]]
    step1 = states[final.parent_id or ""]
    base = states[step1.parent_id or ""]
    assert base.parent_id is None and {final.base_id, step1.base_id} == {base.id}
    # each state holds its parent's effects plus its own step, in order
    assert applied(services, base.id) == []
    assert applied(services, step1.id) == ["create table a()"]
    assert applied(services, final.id) == ["create table a()", "create table b()"]
    # one scratch server, started once, built the whole chain (base, step 1, step 2); then the instance
    assert len(fakes.runtime.started) == 2
    assert [server.spec.instance_id for server in fakes.runtime.running()] == [result["instance_id"]]
    instance = fakes.repo.get_instance(result["instance_id"])
    assert instance is not None and instance.status == InstanceStatus.RUNNING
    assert instance.dsn == result["dsn"] and instance.port in fakes.admin.passwords  # password set on start
    assert leftovers(services) == []
    assert len(fakes.store.synced) == 2  # the base at once, then one flush for the chain, before the renames


def test_a_hit_builds_nothing_and_only_starts_the_instance(engine: Wired) -> None:
    services, fakes = engine
    first = prepare(services, "create table a()", "create table b()")
    started = len(fakes.runtime.started)
    assert all(item["cached"] for item in plan(services, "create table a()", "create table b()"))
    second = prepare(services, "create table a()", "create table b()")
    assert second["state_id"] == first["state_id"] and second["instance_id"] != first["instance_id"]
    assert len(fakes.runtime.started) == started + 1
    assert len(fakes.repo.list_states()) == 3
    assert fakes.repo.get_state(first["state_id"]).hits >= 1


def test_a_changed_step_rebuilds_from_the_last_cached_state(engine: Wired) -> None:
    services, fakes = engine
    prepare(services, "create table a()", "create table b()", build_only=True)
    items = plan(services, "create table a()", "create table c()")
    assert [item["cached"] for item in items] == [True, True, False]
    result = prepare(services, "create table a()", "create table c()", build_only=True)
    assert applied(services, result["state_id"]) == ["create table a()", "create table c()"]
    assert len(fakes.repo.list_states()) == 4
    assert result["instance_id"] is None and fakes.runtime.running() == []


def test_variables_enter_the_key_of_every_step(engine: Wired) -> None:
    services, _ = engine
    from sqlrs.domain.steps import PsqlOptions

    plain = plan(services, "select 1")
    with_var = services.prepare.run(job_context(services), PrepareRequest(
        steps=(command("select 1"),), options=PsqlOptions(variables=(("x", "1"),)), plan_only=True))["plan"]
    assert plain[0]["state_id"] == with_var[0]["state_id"]  # the base does not depend on psql options
    assert plain[1]["state_id"] != with_var[1]["state_id"]


def test_a_failed_step_leaves_nothing_of_itself_and_keeps_what_was_kept_before(engine: Wired) -> None:
    services, fakes = engine
    fakes.store.clone_seconds = 1.0  # keeping a state costs more than the steps it would save
    ctx = job_context(services)
    sql = ["create table a()", "create table b()", "create table c()"]
    request = PrepareRequest(steps=(*(command(s) for s in sql), command("FAIL here")))
    with pytest.raises(StepFailed, match=r"step 4 \(-c\) failed"):
        services.prepare.run(ctx, request)
    # the base and the step before the last are kept whatever they cost; a and b are not worth it
    states = fakes.repo.list_states()
    assert sorted(applied(services, state.id) for state in states) == [[], sql]
    assert sorted(p.name for p in services.layout.states_dir.iterdir()) == sorted(state.id for state in states)
    tasks = {task.index: task.status for task in fakes.repo.list_tasks(ctx.job.id)}
    assert tasks == {0: TaskStatus.DONE, 1: TaskStatus.DONE, 2: TaskStatus.DONE, 3: TaskStatus.DONE,
                     4: TaskStatus.FAILED, 5: TaskStatus.SKIPPED}  # the instance
    assert leftovers(services) == []
    assert fakes.runtime.running() == [] and fakes.repo.list_instances() == []
    # the next try starts from what was kept: only the fixed step is built
    items = plan(services, *sql, "create table y()")
    assert [item["cached"] for item in items] == [True, True, True, True, False]
    assert [item["checkpoint"] for item in items] == [True, False, False, True, True]


def test_a_server_that_dies_at_start_fails_the_build_and_leaves_nothing(engine: Wired) -> None:
    services, fakes = engine
    fakes.runtime.fail_start = 1
    with pytest.raises(Exception, match="exited during start-up"):
        prepare(services, "create table a()")
    assert fakes.repo.list_states() == [] and leftovers(services) == []
    assert list(services.layout.states_dir.iterdir()) == []
