"""The states of a chain's prefixes, as instances: what `check:*` and `bisect:*` work on.

A chain is a prepare job's body with all its steps; state k is the chain's state after its first
k steps (state 0: the base, or the `--from` state). An instance of state k comes from a prepare
job of the first k steps, so the engine's prepare decides how: a warm instance, a clone of a
cached state, or a build of what is missing (from the nearest cached state) — this module never
assumes that a state of the chain is on disk. Instances are ephemeral (the engine removes them
when unused for a minute, should this process die) and removed as soon as they are done with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlrs.engine_client import jobs
from sqlrs.engine_client.errors import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sqlrs.engine_client.connection import EngineClient
    from sqlrs.engine_client.jobs import ProgressSink

# the idle TTL of the instances made here: gone soon if this process dies before removing them
INSTANCE_TTL_SECONDS = 60


class BuildNotes(jobs.NoProgress):
    """A job's progress as short notes: only the steps it has to build (hits say nothing)."""

    def __init__(self, note: Callable[[str], None]):
        self.note = note

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("data", {})
        if event.get("type") != "task" or data.get("kind") == "instance":
            return
        if data.get("status") == "running":
            self.note(f"  building step {data.get('index')}: {data.get('source')}")
        elif data.get("status") == "failed":
            self.note(f"  step {data.get('index')} failed: {data.get('source')}")


class Chain:
    """A chain of steps (a prepare job's body) and the instances of its prefixes' states."""

    def __init__(self, client: EngineClient, body: dict[str, Any],
                 progress: Callable[[], ProgressSink] = jobs.NoProgress):
        self.client = client
        self.body = {key: value for key, value in body.items()
                     if key not in ("name", "on_name", "plan_only", "build_only", "ttl_seconds", "ephemeral")}
        self.steps: list[dict[str, Any]] = list(body["steps"])
        self.progress = progress
        self._plan: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def plan(self) -> list[dict[str, Any]]:
        """The chain's rows as `plan:*` shows them: row k is state k (row 0 the base or --from state)."""
        if self._plan is None:
            result = jobs.prepare(self.client, {**self.body, "plan_only": True}, jobs.NoProgress)
            self._plan = list(result.get("plan", []))
        return self._plan

    def _prefix(self, k: int, **extra: Any) -> dict[str, Any]:
        return jobs.prepare(self.client, {**self.body, "steps": self.steps[:k], **extra}, self.progress)

    def build(self, k: int | None = None) -> str:
        """Build (or find) state k (default: the last); its id."""
        return str(self._prefix(len(self.steps) if k is None else k, build_only=True)["state_id"])

    @contextlib.contextmanager
    def instance(self, k: int) -> Iterator[dict[str, Any]]:
        """An instance of state k for the block (`id`, `dsn`, `state_id`), removed afterwards."""
        if k == 0 and not self.body.get("from_state"):
            made = self._base_instance()
        else:
            result = self._prefix(k, ephemeral=True, ttl_seconds=INSTANCE_TTL_SECONDS)
            made = {"id": result["instance_id"], "dsn": result["dsn"], "state_id": result["state_id"]}
        try:
            yield made
        finally:
            with contextlib.suppress(ClientError):  # its TTL removes it
                self.client.call("DELETE", f"/v1/instances/{made['id']}?force=true")

    def _base_instance(self) -> dict[str, Any]:
        """An instance of the base: a chain of no steps is not a job, the base is a state like any."""
        base = self.plan()[0]["state_id"]
        body = {"state_id": base, "ttl_seconds": INSTANCE_TTL_SECONDS, "image": self.body.get("image")}
        try:
            made: dict[str, Any] = self.client.call("POST", "/v1/instances", body)
        except ClientError as error:
            if error.code != "not_found" or not self.steps:
                raise
            self.build(1)  # nothing of the chain was built yet: building its first step makes the base
            made = self.client.call("POST", "/v1/instances", body)
        return {"id": made["id"], "dsn": made["dsn"], "state_id": made["state_id"]}


def compare(client: EngineClient, a: str, b: str, *, data: str = "content", ignore: list[str] | None = None,
            image: str | None = None) -> dict[str, Any]:
    """`POST /v1/compare`: the differences from A to B (states, instances or names)."""
    body: dict[str, Any] = {"a": a, "b": b, "data": data, "ignore": list(ignore or [])}
    if image:
        body["image"] = image
    result: dict[str, Any] = client.call("POST", "/v1/compare", body, timeout=None)
    return result
