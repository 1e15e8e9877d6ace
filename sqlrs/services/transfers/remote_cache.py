"""The remote cache as prepare sees it (config `cache.remote`): which states of a plan the
registry has, pulling them instead of building, and pushing what prepare built
(`cache.remote_push`). The transfers themselves are push.py's and pull.py's.
"""

from __future__ import annotations

import time

from sqlrs.domain.errors import SqlrsError
from sqlrs.domain.model import State, Task, TaskStatus
from sqlrs.domain.remote import Incompatible, RegistryError, read_manifest, state_tag
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.plan import PlanItem, mark_cached
from sqlrs.services.transfers.pull import StatePuller
from sqlrs.services.transfers.push import StatePusher
from sqlrs.services.transfers.registries import Registries, check_compatible


class RemoteCache:
    """Prepare's hooks into the remote cache; items are prepare's PlanItems."""

    def __init__(self, registries: Registries, pusher: StatePusher, puller: StatePuller):
        self.registries = registries
        self.pusher = pusher
        self.puller = puller

    def annotate(self, ctx: JobContext, items: list[PlanItem]) -> None:
        """Mark the plan items (PlanItem) not cached here but in the remote cache: `remote`."""
        try:
            cache = self.registries.cache_ref()
        except SqlrsError as exc:
            ctx.emit("warning", text=f"remote cache ignored: {exc.message}")
            return
        if cache is None:
            return
        registry = self.registries.registry(cache)
        try:
            for item in items:
                item.remote = False
            # deepest first: a state's manifest implies its ancestors are there too
            for item in reversed(items):
                if item.cached:
                    break
                if registry.has_manifest(state_tag(item.state_id)):
                    for earlier in items[: item.index + 1]:
                        earlier.remote = not earlier.cached
                    break
        except SqlrsError as exc:
            ctx.emit("warning", text=f"remote cache {cache.host}/{cache.repository} not used: {exc.message}")
            for item in items:
                item.remote = False

    def fill(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
             tasks: list[Task]) -> None:
        """Before a build: pull the deepest uncached state the remote cache has, with its chain.

        The remote cache is a shortcut: when a pull fails (registry down, corrupt blob), the
        job warns and builds what is still missing; states pulled before the failure stay."""
        try:
            self._fill(ctx, runtime, identity, items, tasks)
        except (RegistryError, Incompatible) as exc:
            ctx.emit("warning", text=f"could not pull from the remote cache ({exc.message}): building instead")
            mark_cached(items, self.puller.catalog)

    def _fill(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
              tasks: list[Task]) -> None:
        wanted = [item for item in items if item.remote and not item.cached]
        cache = self.registries.cache_ref()
        if not wanted or cache is None:
            return
        deepest = wanted[-1]
        ref = cache.with_tag(state_tag(deepest.state_id))
        registry = self.registries.registry(ref)
        found = registry.manifest(ref.reference)
        if found is None:
            ctx.emit("warning", text=f"{ref} vanished from the remote cache: building instead")
            return
        chain, notes = read_manifest(found[0], str(ref))
        check_compatible(str(ref), chain, notes, identity)
        ctx.emit("log", stream="engine", text=f"pulling {len(wanted)} state(s) from {cache.host}/{cache.repository} "
                                                f"instead of building them")
        by_state = {task.state_id: task for task in tasks}
        started = time.monotonic()
        self.puller.materialize(ctx, registry, chain, runtime, identity)
        for item in items[: deepest.index + 1]:
            if not item.cached:
                item.cached = True
                task = by_state.get(item.state_id)
                if task is not None:
                    ctx.update_task(task, TaskStatus.CACHED, seconds=round(time.monotonic() - started, 3))

    def after_commit(self, ctx: JobContext, state: State) -> None:
        """With cache.remote_push: push a state prepare just built (a failure only warns)."""
        if not self.registries.push_built or ctx.job.kind != "prepare":
            return
        try:
            if self.registries.cache_ref() is None:
                ctx.emit("warning", text="cache.remote_push is set but cache.remote is not: nothing pushed")
                return
            result = self.pusher.push(ctx, state, image=(ctx.job.request or {}).get("image"))
            ctx.emit("push", state_id=state.id, reference=result["reference"], uploaded=len(result["uploaded"]))
        except SqlrsError as exc:
            ctx.emit("warning", text=f"could not push state {state.id[:12]} to the remote cache: {exc.message}")
