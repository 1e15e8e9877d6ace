"""Executors of the step kinds: one module per kind (psql's `file` and `command` in psql.py).

`ChainBuilder` (services/states/build.py) hands every step to the executor registered here for its
kind. An executor gets the running build server (a scratch server on the parent state) and must
leave the step's effect in it, or raise `StepFailed` naming the step; the builder keeps the
state afterwards (or not: domain/checkpoints.py).

Host kinds (alembic, exec, liquibase, django) run a tool on the engine's machine that connects
over TCP: `host.host_login` gives the build server's `sqlrs` role a random password for the
duration of the step, and `host.run_host_command` runs the tool with the connection in its
environment, streaming its output into the job's events and killing it on cancel.

To add a kind: a module with an executor (`kind`, `state_kind`, `apply`), an entry in
`EXECUTORS`, the kind in `sqlrs.domain.steps` (StepKind, HOST_KINDS) and in `StateKind`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sqlrs.domain.model import StateKind
from sqlrs.domain.steps import Step
from sqlrs.ports.tools import LiquibaseLauncher
from sqlrs.services.states.steps.alembic import AlembicExecutor
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.command import ExecExecutor
from sqlrs.services.states.steps.django import DjangoExecutor
from sqlrs.services.states.steps.liquibase import LiquibaseExecutor
from sqlrs.services.states.steps.psql import PsqlExecutor

__all__ = ["EXECUTORS", "Prestarting", "SendsAhead", "StepExecutor", "StepRun", "executor_for", "state_kind",
           "use_liquibase"]


class StepExecutor(Protocol):
    """Applies steps of one kind to a running build server."""

    kind: str
    state_kind: StateKind

    def apply(self, run: StepRun) -> None:
        """Apply `run.step` to `run.server`; raise StepFailed (naming the step) when it fails."""
        ...


@runtime_checkable
class Prestarting(Protocol):
    """An executor whose tool is worth starting before the build server is up."""

    def prestart(self, run: StepRun) -> None:
        """Start the tool of the build's first step to build while the build server is made
        (`run.server` is not set yet): what it loads overlaps the clone and the start. Raises
        nothing: the step itself reports what is wrong."""
        ...


@runtime_checkable
class SendsAhead(Protocol):
    """An executor whose tool can be given the next step before the build has recorded this one."""

    def send_ahead(self, run: StepRun) -> bool:
        """Start `run.step` on `run.server` (where the step before it just finished) without
        waiting for it; True when started (`apply` then waits for it), False when `apply` should
        run it as usual."""
        ...


_LIQUIBASE = LiquibaseExecutor()
_PSQL = PsqlExecutor()
EXECUTORS: dict[str, StepExecutor] = {
    **{executor.kind: executor for executor in (AlembicExecutor(), ExecExecutor(), _LIQUIBASE, DjangoExecutor())},
    **dict.fromkeys(_PSQL.kinds, _PSQL)}


def use_liquibase(launcher: LiquibaseLauncher) -> None:
    """Wire the Liquibase installation adapter (the composition root does, once per process)."""
    _LIQUIBASE.install = launcher


def executor_for(kind: str) -> StepExecutor:
    """The executor of `kind` (a kind sqlrs.domain.steps knows)."""
    return EXECUTORS[kind]


def state_kind(step: Step | None) -> StateKind:
    """What `ls --states` shows as a state's kind."""
    if step is None:
        return StateKind.BASE
    return EXECUTORS[step.kind].state_kind
