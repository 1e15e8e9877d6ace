"""The progress events of pushes and pulls (jobs: their request bodies are services/requests.py's)."""

from __future__ import annotations

import time
from typing import Any

from sqlrs.services.faults import crash_point
from sqlrs.services.jobs import JobContext

PROGRESS_EVERY = 0.5  # seconds between two transfer events of one blob


class TransferProgress:
    """Transfer events at most every PROGRESS_EVERY seconds, and at the end."""

    def __init__(self, ctx: JobContext | None, **fields: Any):
        self.ctx = ctx
        self.fields = fields
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.fields.get("direction") == "pull" and done < total:
            crash_point("pull:transferring")
        now = time.monotonic()
        if self.ctx is not None and (done >= total or now - self.last >= PROGRESS_EVERY):
            self.last = now
            self.ctx.emit("transfer", **self.fields, bytes=done, total=total)
            self.ctx.check_cancel()
