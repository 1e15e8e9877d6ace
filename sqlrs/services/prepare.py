"""Prepare jobs: plan a chain of states, build what is missing, start an instance.

The plan is the chain of state ids (`sqlrs.domain.keys`) from the base (or a `--from` state)
through every step, each marked cached or not (services/states/plan.py); the remote cache may
mark some as pullable. Building what is missing is services/states/build.py (ChainBuilder); then
an instance is started, or a named one reused or replaced.

`submit` checks a request before anything is queued (an unknown runtime or `--from` state, a
name already taken, a step sent without content that must be built: `409 content_required`),
and the job goes on from what those checks found: its runtime choice and, when they made one,
its plan (a cache hit sent as digests only is planned once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from sqlrs.domain import keys, roles
from sqlrs.domain.errors import (
    Ambiguous,
    Conflict,
    ContentRequired,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
    UsageError,
)
from sqlrs.domain.model import Instance, InstanceKind, Job, State, Task, TaskStatus
from sqlrs.domain.roles import DEFAULT_SUPERUSER, INITDB_OPTIONS
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.clock import Clock
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.identities import Identities
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.instances.runtimes import Choice
from sqlrs.services.jobs import JobContext, JobRunner
from sqlrs.services.requests import PrepareRequest
from sqlrs.services.states.build import ChainBuilder
from sqlrs.services.states.explain import explain
from sqlrs.services.states.plan import FROM_KIND, PlanItem, mark_plan

if TYPE_CHECKING:  # only for the type: remote_cache needs nothing of prepare at run time
    from sqlrs.services.transfers.remote_cache import RemoteCache


@attrs.define
class Planned:
    """A request with what runs it: its runtime (and why), identity, start state, bootstrap
    superuser and, once made, its plan."""

    request: PrepareRequest
    choice: Choice
    identity: RuntimeIdentity
    start: State | None
    superuser: str
    items: list[PlanItem] | None = None

    @property
    def runtime(self) -> Runtime:
        return self.choice.runtime


class PrepareService:
    def __init__(self, identities: Identities, builder: ChainBuilder, instances: Instances, jobs: JobRunner,
                 clock: Clock, remote: RemoteCache | None = None,
                 warnings: Callable[[bool], list[str]] = lambda copies: []):
        self.identities = identities
        self.builder = builder
        self.catalog = builder.catalog
        self.instances = instances
        self.jobs = jobs
        self.clock = clock
        self.remote = remote  # pulls from the remote cache instead of building
        # shown to the user by a prepare job (the copy backend's): called with whether this job
        # copies a data directory (a build, or an instance cloned from its state)
        self.warnings = warnings

    # -- taking a request ------------------------------------------------------------------------
    def submit(self, request: PrepareRequest, summary: dict[str, Any]) -> Job:
        """Check the request, then queue its job (`summary`: the request as the job keeps it)."""
        self.identities.registry.check_name(request.runtime)
        planned: Planned | None = None
        if request.from_state is not None:  # a missing or ambiguous state: refused before queueing
            request = self.with_start(request)
        if request.name and request.on_name == "error" and not request.plan_only:
            self.require_name_free(request.name)
        if not request.plan_only and not all(step.has_content for step in request.steps):
            planned = self.planned(request)
            missing = [item.index for item in planned.items or () if not item.cached and item.step is not None
                       and not item.step.has_content]
            if missing:
                raise ContentRequired(f"steps {missing} are not cached: send their content",
                                      details={"steps": missing})
        return self.jobs.submit("plan" if request.plan_only else "prepare", summary,
                                lambda ctx: self.run(ctx, request, planned))

    def planned(self, request: PrepareRequest, every_row: bool = False) -> Planned:
        """The request's runtime (chosen now), identity, start state and plan."""
        choice = self.identities.choose(request.runtime, request.image, request.postgres_version)
        identity = self.identities.identity_for(choice.runtime, request.image, request.postgres_version)
        start = self.start_of(request, identity)
        superuser = self.superuser_for(request, identity, start)
        planned = Planned(request, choice, identity, start, superuser)
        planned.items = self.plan(identity, request.steps, request.options, start, every_row, superuser)
        return planned

    def plan(self, identity: RuntimeIdentity, steps: tuple[Step, ...], options: PsqlOptions, start: State | None = None,
             every_row: bool = False, superuser: str = DEFAULT_SUPERUSER) -> list[PlanItem]:
        """The chain's rows, base (or --from state) first, each with its state id, whether it is
        cached and whether it is (or will be) kept (`mark_plan`; `every_row`: as plan:* shows)."""
        if start is not None:  # the chain on `start` instead of the base: state_k = H(start, step_k)
            first = PlanItem(0, FROM_KIND, start.id, start.parent_id, start.source, None, False)
        else:
            first = PlanItem(0, "base", roles.base_id(identity.identity, INITDB_OPTIONS, superuser), None, "initdb",
                             None, False)
        items = [first]
        parent = first.state_id
        for index, (step, state_id) in enumerate(zip(steps, keys.chain(parent, steps, options), strict=True), 1):
            items.append(PlanItem(index, "step", state_id, parent, step.source, step, False))
            parent = state_id
        return mark_plan(items, self.catalog, self.builder.policy, every_row)

    # -- starting from an existing state (--from) -----------------------------------------------
    def find_start(self, ref: str) -> State:
        """The cached state `--from` names, by id or unique prefix."""
        try:
            state = self.catalog.find(ref)
        except Ambiguous as exc:
            raise Ambiguous(f"--from {ref!r} matches {len(exc.details['candidates'])} states", details=exc.details,
                            hint="give more characters of the state id") from None
        except NotFound:
            state = None
        if state is None or not self.catalog.is_kept(state.id):
            raise NotFound(f"no state matches --from {ref!r}", hint="list them with: sqlrs ls --states")
        return state

    def with_start(self, request: PrepareRequest) -> PrepareRequest:
        """With --from: the state's full id, and its runtime (a different --runtime is refused)."""
        if request.from_state is None:
            return request
        start = self.find_start(request.from_state)
        if request.runtime not in (None, "auto", start.runtime):
            raise UsageError(f"state {start.id[:12]} belongs to the {start.runtime} runtime, not {request.runtime}",
                             hint=f"drop --runtime, or use --runtime {start.runtime}")
        image = request.image
        if image is None and self.identities.registry.get(start.runtime).needs_image:
            image = self.catalog.image_of(start)
        return attrs.evolve(request, from_state=start.id, runtime=start.runtime, image=image)

    def start_of(self, request: PrepareRequest, identity: RuntimeIdentity) -> State | None:
        """The state a chain starts from (None: the base), checked against what will run it."""
        if request.from_state is None:
            return None
        start = self.find_start(request.from_state)
        if roles.superuser_of(identity.identity, INITDB_OPTIONS, start.base_id) is None:
            raise UsageError(f"state {start.id[:12]} was not built by {identity.description}",
                             hint="pass the --image (and --runtime) the state was prepared with")
        return start

    @staticmethod
    def superuser_for(request: PrepareRequest, identity: RuntimeIdentity, start: State | None) -> str:
        """The bootstrap superuser the chain's steps run as: the request's, or the start state's."""
        if start is None:
            return roles.check_superuser(request.superuser)
        return roles.superuser_of(identity.identity, INITDB_OPTIONS, start.base_id) or DEFAULT_SUPERUSER

    # -- the job -----------------------------------------------------------------------------
    def run(self, ctx: JobContext, request: PrepareRequest, planned: Planned | None = None) -> dict[str, Any]:
        """The job: plan (unless `submit` did), build or pull what is missing, hand out an instance."""
        if planned is None:
            request = self.with_start(request)
            planned = self.planned(request, every_row=request.plan_only)
        for skipped in planned.choice.skipped:
            ctx.emit("warning", text=f"runtime auto: skipped {skipped.name}: {skipped.reason}")
        ctx.emit("runtime", runtime=planned.runtime.name, reason=planned.choice.reason)
        try:
            return self._run(ctx, planned)
        except (RuntimeFailure, RuntimeUnavailable, OSError):
            # the runtime may have gone away (daemon stopped): the next choice asks it again
            self.identities.registry.forget_probe(planned.runtime.name)
            raise

    def _run(self, ctx: JobContext, planned: Planned) -> dict[str, Any]:
        request, runtime, identity, items = planned.request, planned.runtime, planned.identity, planned.items
        assert items is not None
        if self.remote is not None:
            self.remote.annotate(ctx, items)
        tasks = [Task(ctx.job.id, item.index, item.kind, item.state_id, item.source,
                      TaskStatus.CACHED if item.cached else TaskStatus.PENDING) for item in items]
        if not request.plan_only and not request.build_only:
            tasks.append(Task(ctx.job.id, len(items), "instance", None, "instance", TaskStatus.PENDING))
        ctx.set_tasks(tasks)
        plan = [item.to_json() for item in items]
        ctx.emit("plan", runtime=runtime.name, identity=identity.description, steps=plan)
        if request.image and not runtime.needs_image:
            ctx.emit("warning", text=f"the {runtime.name} runtime ignores the image {request.image}: its states are "
                                     f"based on {identity.description}; choose a container runtime (--runtime) "
                                     "for images")
        if request.plan_only:
            result: dict[str, Any] = {"plan": plan, "runtime": runtime.name, "identity": identity.description}
            if request.explain:
                result["explain"] = explain(self.catalog.repo, self.jobs.repo, identity, items, request,
                                            planned.superuser)
            return result
        warned = self._warn(ctx, copies=not all(item.cached for item in items))

        named = self.instances.named(request.name)
        instance_task = tasks[-1]
        if named is not None and request.on_name == "reuse" and named.state_id == items[-1].state_id:
            instance = self.instances.ensure_running(named)
            ctx.update_task(instance_task, TaskStatus.CACHED, state_id=named.state_id)
            ctx.emit("log", stream="engine", text=f"reusing instance {instance.id} ({request.name})")
            return self._result(instance, runtime, reused=True)
        if named is not None and request.on_name == "error":
            raise name_taken(request.name or "", named)

        if self.remote is not None and any(item.remote for item in items):
            self.remote.fill(ctx, runtime, identity, items, tasks)
        built = self.builder.build(ctx, runtime, identity, items, tasks, request.options,
                                   instance_next=not request.build_only and request.instance_kind != "database",
                                   superuser=planned.superuser)
        if self.remote is not None and built.published:
            self.remote.after_commit(ctx, built.published[-1])
        final = built.final
        if request.build_only:
            return {"state_id": final.id, "instance_id": None, "runtime": runtime.name}
        ctx.check_cancel()
        started = time.monotonic()
        ctx.update_task(instance_task, TaskStatus.RUNNING, started_at=self.clock.now())
        instance = self.instances.create(final, runtime, identity, kind=InstanceKind(request.instance_kind),
                                         name=request.name, ephemeral=request.ephemeral, job_id=ctx.job.id,
                                         ttl_seconds=request.ttl_seconds or 0, spares=request.spares,
                                         on_copy=None if warned else lambda: self._warn(ctx, copies=True))
        if named is not None:
            ctx.emit("log", stream="engine", text=f"replacing instance {named.id} ({request.name})")
            self.instances.remove(named)
        ctx.update_task(instance_task, TaskStatus.DONE, state_id=final.id, finished_at=self.clock.now(),
                        seconds=round(time.monotonic() - started, 3))
        return self._result(instance, runtime, reused=False)

    def _warn(self, ctx: JobContext, copies: bool) -> bool:
        """Emit the store's warnings for a job that copies data directories (or not); True if any."""
        texts = self.warnings(copies)
        for text in texts:
            ctx.emit("warning", text=text)
        return bool(texts)

    @staticmethod
    def _result(instance: Instance, runtime: Runtime, reused: bool) -> dict[str, Any]:
        return {"instance_id": instance.id, "state_id": instance.state_id, "dsn": instance.dsn,
                "runtime": runtime.name, "name": instance.name, "port": instance.port, "reused": reused}

    def require_name_free(self, name: str | None) -> None:
        """Raise Conflict when `name` is bound to an instance (a new instance may not take it)."""
        named = self.instances.named(name)
        if named is not None:
            raise name_taken(name or "", named)


def name_taken(name: str, instance: Instance) -> Conflict:
    return Conflict(f"name {name!r} is bound to instance {instance.id}",
                    hint="--reuse keeps it when its state matches, --fresh replaces it, or choose another name")
