"""The states of a chain's prefixes, as instances: what `check:*` and `bisect:*` work on.

A chain is a prepare job's body with all its steps; state k is the chain's state after its first
k steps (state 0: the base, or the `--from` state). An instance of a state the chain's plan says
is cached comes straight from `POST /v1/instances` (a warm instance or a clone: no job); any
other, or one the engine turns out not to hold, from a prepare job of the first k steps, so the
engine's prepare decides how to make it (a build of what is missing from the nearest cached
state) — this module never relies on a state of the chain being on disk. Instances have a short
idle TTL (the engine removes them should this process die) and are removed once done with. They
are one-offs (`spares: false`): the engine keeps no warm instance or copy ahead of a prefix's state
for them, so checking a 250-step history does not leave a server per step behind.
"""

from __future__ import annotations

import contextlib
import threading
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
        self._removals: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self.steps)

    def plan(self) -> list[dict[str, Any]]:
        """The chain's rows as `plan:*` shows them: row k is state k (row 0 the base or --from state)."""
        if self._plan is None:
            result = jobs.prepare(self.client, {**self.body, "plan_only": True}, jobs.NoProgress)
            self._plan = list(result.get("plan", []))
        return self._plan

    def _prefix(self, k: int, **extra: Any) -> dict[str, Any]:
        result = jobs.prepare(self.client, {**self.body, "steps": self.steps[:k], **extra}, self.progress)
        if self._plan is not None:  # states 0..k are made now, k kept: later asks may take them from the cache
            for row in self._plan[:k + 1]:
                row["cached"] = True
            if "checkpoint" in self._plan[k]:
                self._plan[k]["checkpoint"] = True
        return result

    def build(self, k: int | None = None) -> str:
        """Build (or find) state k (default: the last); its id."""
        return str(self._prefix(len(self.steps) if k is None else k, build_only=True)["state_id"])

    @contextlib.contextmanager
    def instance(self, k: int) -> Iterator[dict[str, Any]]:
        """An instance of state k for the block (`id`, `dsn`, `state_id`), removed afterwards."""
        made = self._cached_instance(k)
        if made is None:
            result = self._prefix(k, ephemeral=True, ttl_seconds=INSTANCE_TTL_SECONDS, spares=False)
            made = {"id": result["instance_id"], "dsn": result["dsn"], "state_id": result["state_id"]}
        try:
            yield made
        finally:
            # removed while the caller goes on (the next probe's instance starts meanwhile); `close`
            # waits for every removal
            removal = threading.Thread(target=self._remove, args=(made["id"],), name="sqlrs-remove", daemon=True)
            removal.start()
            self._removals.append(removal)

    def _remove(self, instance_id: str) -> None:
        with contextlib.suppress(ClientError):  # its TTL removes it
            self.client.call("DELETE", f"/v1/instances/{instance_id}?force=true")

    def close(self) -> None:
        """Wait until every instance this chain made is removed."""
        for removal in self._removals:
            removal.join()
        self._removals.clear()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _cached_instance(self, k: int) -> dict[str, Any] | None:
        """An instance of state k straight from the cache (`POST /v1/instances`: no job, no
        planning of the k steps before it), or None when the engine does not hold that state."""
        row = self.plan()[k]
        # `cached` without `checkpoint`: a kept state deeper in the chain covers it, but it has no
        # data directory of its own (SPEC 5): a prepare job replays it
        if (not row.get("cached") or row.get("checkpoint") is False) and k > 0:
            return None
        body = {"state_id": row["state_id"], "ttl_seconds": INSTANCE_TTL_SECONDS, "image": self.body.get("image"),
                "spares": False}
        try:
            made: dict[str, Any] = self.client.call("POST", "/v1/instances", body)
        except ClientError as error:
            if error.code != "not_found":
                raise
            if k > 0 or self.body.get("from_state") or not self.steps:
                return None
            # the base: a chain of no steps is not a job; building the first step makes the base
            self.build(1)
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
