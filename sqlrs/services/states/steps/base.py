"""What an executor gets: the job, the build server, the step."""

from __future__ import annotations

from typing import Protocol

import attrs

from sqlrs.domain.roles import DEFAULT_SUPERUSER
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.services.instances.servers import Server
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.steps.idle_runners import IdleRunners


class ToolSession(Protocol):
    """A tool kept running across the steps of one build (e.g. one Python process applying
    revision after revision), instead of one start per step."""

    reusable: bool  # whether a later build may take it over (steps/idle_runners.py)

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        ...

    def close(self) -> None:
        """Stop it and everything it started; idempotent."""
        ...


@attrs.frozen
class StepRun:
    """One step to apply: `server` runs on the parent state's scratch copy. `sessions`: the
    build's open tool sessions by the executor's key; the build closes them when it ends or its
    server changes."""

    ctx: JobContext
    server: Server
    index: int  # the step's position in the chain (1-based; 0 is the base)
    step: Step
    admin: ServerAdmin
    sessions: dict[str, ToolSession] = attrs.field(factory=dict)
    options: PsqlOptions = attrs.field(factory=PsqlOptions)  # psql's -v and -1 (they enter psql steps' keys)
    superuser: str = DEFAULT_SUPERUSER  # the chain's bootstrap superuser: psql steps run as it
    runners: IdleRunners | None = None  # runners an earlier build left for this one (idle_runners.py)

    def log(self, stream: str, text: str) -> None:
        """One line of the tool's output, as a job event (what `sqlrs watch` shows)."""
        self.ctx.emit("log", index=self.index, stream=stream, text=text)

    @property
    def label(self) -> str:
        """How messages name the step: `step 3 (source)`."""
        return f"step {self.index} ({self.step.source})"
