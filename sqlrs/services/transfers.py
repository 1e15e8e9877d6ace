"""Pushes and pulls as jobs: their request bodies and their progress events."""

from __future__ import annotations

import time
from typing import Any

from sqlrs.domain.errors import UsageError
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


def parse_transfer(body: Any, required: str) -> dict[str, Any]:
    """A push or pull request body: `required` (a string) and optional runtime, image, target."""
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    allowed = {required, "target", "runtime", "image"}
    extra = set(body) - allowed
    if extra:
        raise UsageError(f"unknown fields: {', '.join(sorted(extra))}", hint=f"fields: {', '.join(sorted(allowed))}")
    if not isinstance(body.get(required), str) or not body[required]:
        raise UsageError(f"{required} is required (a string)")
    for key in ("target", "runtime", "image"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise UsageError(f"{key} must be a string")
    return body
