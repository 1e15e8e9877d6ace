"""Host step kinds (alembic, exec): facts decide the key, how they run does not; psql keys stay."""

from __future__ import annotations

import pytest

from sqlrs.domain import keys
from sqlrs.domain.errors import UsageError
from sqlrs.domain.model import StateKind
from sqlrs.domain.steps import HostRun, PsqlOptions, ScriptFile, Step
from sqlrs.services.states.steps import executor_for, state_kind


def host_step(kind: str = "exec", keyed: tuple[tuple[str, str], ...] = (("arg", "make"), ("arg", "migrate")),
              cwd: str = "/work/project", env: tuple[tuple[str, str], ...] = (("PATH", "/usr/bin"),),
              argv: tuple[str, ...] = ("make", "migrate"), source: str = "make migrate") -> Step:
    return Step(kind=kind, source=source, keyed=keyed,  # type: ignore[arg-type]
                run=HostRun(cwd=cwd, argv=argv, env=env))


def test_psql_keys_are_byte_identical_to_before_step_kinds() -> None:
    # golden values computed by the code before host kinds existed: a changed psql key would
    # throw every user's cache away
    step = Step(kind="file", source="a.sql", files=(ScriptFile("a.sql", "select 1;\n"),))
    command = Step(kind="command", source="-c", sql="select 2")
    assert keys.step_hash(step, PsqlOptions()) == "c67880c5f7184fd88636215df25387ef1da64c7b6dfd0ad8bb6c54da65ffb3ff"
    assert keys.step_hash(command, PsqlOptions.create([("x", "1")], True)) == (
        "556614e64a663051fc2c83529e8cf4d3d85d3e7c7a5b98f6d6448c68b1346707")


def test_where_and_how_a_host_step_runs_does_not_enter_its_key() -> None:
    plain = host_step()
    moved = host_step(cwd="/elsewhere", env=(("PATH", "/opt/bin"), ("HOME", "/root")), source="other spelling")
    assert keys.step_hash(plain, PsqlOptions()) == keys.step_hash(moved, PsqlOptions())
    # psql options apply to psql steps only
    assert keys.step_hash(plain, PsqlOptions.create([("x", "1")], True)) == keys.step_hash(plain, PsqlOptions())


def test_facts_and_kind_enter_the_key() -> None:
    plain = keys.step_hash(host_step(), PsqlOptions())
    assert keys.step_hash(host_step(keyed=(("arg", "make"), ("arg", "migrate2"))), PsqlOptions()) != plain
    assert keys.step_hash(host_step(keyed=(("arg", "makemigrate"),)), PsqlOptions()) != plain
    assert keys.step_hash(host_step(kind="alembic"), PsqlOptions()) != plain
    # a psql step whose digest happens to equal a host step's still gets another key
    lean = host_step().without_content()
    assert lean.kind == "exec" and keys.step_hash(lean, PsqlOptions()) == plain
    as_command = Step(kind="command", source="-c", digest=lean.digest)
    assert keys.step_hash(as_command, PsqlOptions()) != plain


def test_a_lean_host_step_validates_and_a_lying_one_does_not() -> None:
    step = host_step()
    step.validate()
    lean = step.without_content()
    lean.validate()
    assert not lean.has_content and lean.content_digest() == step.content_digest()
    liar = Step(kind="exec", source="x", keyed=step.keyed, run=step.run, digest="0" * 64)
    with pytest.raises(UsageError, match="does not match"):
        liar.validate()


@pytest.mark.parametrize("step", [
    Step(kind="exec", source="x", keyed=(("arg", "x"),)),  # no run, no digest
    Step(kind="exec", source="x", run=HostRun(cwd="/", argv=("x",))),  # no facts
    Step(kind="exec", source="x", keyed=(("arg", "x"),), run=HostRun(cwd="relative", argv=("x",))),
    Step(kind="exec", source="x", keyed=(("arg", "x"),), run=HostRun(cwd="/", argv=())),
    Step(kind="exec", source="x", keyed=(("arg", "x"),), run=HostRun(cwd="/", argv=("x",)), sql="select 1"),
    Step(kind="command", source="-c", sql="select 1", run=HostRun(cwd="/", argv=("x",))),
    Step(kind="liquibas", source="x", digest="0" * 64),  # type: ignore[arg-type]
])
def test_malformed_host_steps_are_refused(step: Step) -> None:
    with pytest.raises(UsageError):
        step.validate()


def test_every_kind_has_an_executor_and_a_state_kind() -> None:
    assert executor_for("file") is executor_for("command") and executor_for("file").state_kind == StateKind.PSQL
    assert state_kind(None) == StateKind.BASE
    assert state_kind(Step(kind="command", source="-c", sql="")) == StateKind.PSQL
    for kind, expected in (("alembic", StateKind.ALEMBIC), ("exec", StateKind.EXEC), ("django", StateKind.DJANGO),
                           ("liquibase", StateKind.LIQUIBASE)):
        executor = executor_for(kind)
        assert executor is not None and executor.kind == kind
        assert state_kind(host_step(kind=kind)) == expected
