"""What an executor gets: the job, the build server, the step."""

from __future__ import annotations

import attrs

from sqlrs.domain.steps import Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.services.jobs import JobContext
from sqlrs.services.servers import Server


@attrs.frozen
class StepRun:
    """One step to apply: `server` runs on the parent state's scratch copy."""

    ctx: JobContext
    server: Server
    index: int  # the step's position in the chain (1-based; 0 is the base)
    step: Step
    admin: ServerAdmin

    def log(self, stream: str, text: str) -> None:
        """One line of the tool's output, as a job event (what `sqlrs watch` shows)."""
        self.ctx.emit("log", index=self.index, stream=stream, text=text)

    @property
    def label(self) -> str:
        """How messages name the step: `step 3 (source)`."""
        return f"step {self.index} ({self.step.source})"
