"""Prepare jobs: plan a chain of states, build what is missing, start an instance.

The plan is the chain of state ids (`sqlrs.domain.keys`) from the base (or a `--from` state)
through every step, each marked cached or not; the remote cache may mark some as pullable.
Building what is missing is `services/build.py` (ChainBuilder); then an instance is started, or a
named one reused or replaced.
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
from sqlrs.domain.model import Instance, State, Task, TaskStatus
from sqlrs.domain.roles import DEFAULT_SUPERUSER
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.build import (
    FROM_KIND,
    INITDB_OPTIONS,
    ChainBuilder,
    PlanItem,
    mark_plan,
)
from sqlrs.services.catalog import StateCatalog
from sqlrs.services.explain import explain
from sqlrs.services.instances import InstanceManager
from sqlrs.services.jobs import JobContext
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.requests import PrepareRequest
from sqlrs.services.runtimes import RuntimeRegistry

if TYPE_CHECKING:  # only for the type: remote_cache needs nothing of prepare at run time
    from sqlrs.services.remote_cache import RemoteCache


class PrepareService:
    def __init__(
        self,
        repo: Repository,
        store: SnapshotStore,
        layout: Layout,
        registry: RuntimeRegistry,
        instances: InstanceManager,
        admin: ServerAdmin,
        clock: Clock,
        default_image: Callable[[], str],
        before_build: Callable[[JobContext], None] = lambda ctx: None,
        locks: StateLocks | None = None,
        after_commit: Callable[[JobContext, State], None] = lambda ctx, state: None,
        warnings: Callable[[bool], list[str]] = lambda copies: [],
        remote: RemoteCache | None = None,
        catalog: StateCatalog | None = None,
        make_room: Callable[[JobContext, int], object] = lambda ctx, needed: None,
    ):
        self.repo = repo
        self.store = store
        self.layout = layout
        self.registry = registry
        self.instances = instances
        self.admin = admin
        self.clock = clock
        self.default_image = default_image
        self.before_build = before_build
        self.locks = locks or StateLocks()
        self.after_commit = after_commit  # e.g. evict other states when the cache is over its bounds
        self.catalog = catalog or StateCatalog(repo, store, layout)
        self.builder = ChainBuilder(self.catalog, store, layout, instances, admin, clock, self.locks, after_commit,
                                    make_room=make_room, standby=instances.standby)
        # shown to the user by a prepare job (the copy backend's): called with whether this job
        # copies a data directory (a build, or an instance cloned from its state)
        self.warnings = warnings
        self.remote = remote  # pulls from the remote cache instead of building

    # -- planning ----------------------------------------------------------------------------
    def identity_for(self, runtime: Runtime, image: str | None, major: str | None = None) -> RuntimeIdentity:
        """What `runtime` runs for a request's image and PostgreSQL major. Without an image, a
        major picks `postgres:N` unless config dbms.image already is that major."""
        if not runtime.needs_image:
            return runtime.resolve(None, major)
        if image is None and major is not None:
            default = self.default_image()
            try:
                return runtime.resolve(default, major)
            except RuntimeUnavailable:
                return runtime.resolve(f"postgres:{major}", major)
        return runtime.resolve(image or self.default_image(), major)

    def image_check(self, image: str | None, major: str | None = None) -> tuple[str, Callable[[Runtime], None]]:
        """For `auto`: a runtime that cannot serve the request (its image; native: the major's
        binaries) is not available."""
        wanted = image or (f"postgres:{major}" if major else self.default_image())

        def can_serve(runtime: Runtime) -> None:
            if runtime.needs_image or major is not None:
                self.identity_for(runtime, image, major)  # raises RuntimeUnavailable when it cannot

        return f"{wanted} / {major}" if major else wanted, can_serve

    def choose_runtime(self, ctx: JobContext | None, request: PrepareRequest) -> Runtime:
        choice = self.registry.choose(request.runtime, self.image_check(request.image, request.postgres_version))
        if ctx is not None:
            for skipped in choice.skipped:
                ctx.emit("warning", text=f"runtime auto: skipped {skipped.name}: {skipped.reason}")
            ctx.emit("runtime", runtime=choice.runtime.name, reason=choice.reason)
        return choice.runtime

    def plan(self, identity: RuntimeIdentity, steps: tuple[Step, ...], options: PsqlOptions,
             start: State | None = None, every_row: bool = False,
             superuser: str = DEFAULT_SUPERUSER) -> list[PlanItem]:
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
        state = self.repo.get_state(ref)
        if state is None:
            matches = self.repo.find_states(ref)
            if len(matches) > 1:
                raise Ambiguous(f"--from {ref!r} matches {len(matches)} states",
                                details={"candidates": sorted(m.id for m in matches)},
                                hint="give more characters of the state id")
            state = matches[0] if matches else None
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
        if image is None and self.registry.get(start.runtime).needs_image:
            image = self.image_of_base(start.base_id)
        return attrs.evolve(request, from_state=start.id, runtime=start.runtime, image=image)

    def image_of_base(self, base_id: str) -> str | None:
        """The image of an instance whose state has this base (e.g. the snapshotted instance):
        states do not record their image, and config dbms.image may be another one."""
        bases = {state.id: state.base_id for state in self.repo.list_states()}
        for instance in self.repo.list_instances():
            if instance.image and bases.get(instance.state_id) == base_id:
                return instance.image
        return None

    def start_of(self, request: PrepareRequest, identity: RuntimeIdentity) -> State | None:
        """The state a chain starts from (None: the base), checked against what will run it."""
        if request.from_state is None:
            return None
        start = self.find_start(request.from_state)
        if roles.superuser_of(identity.identity, INITDB_OPTIONS, start.base_id) is None:
            raise UsageError(f"state {start.id[:12]} was not built by {identity.description}",
                             hint="pass the --image (and --runtime) the state was prepared with")
        return start

    def superuser_for(self, request: PrepareRequest, identity: RuntimeIdentity, start: State | None) -> str:
        """The bootstrap superuser the chain's steps run as: the request's, or the start state's."""
        if start is None:
            return roles.check_superuser(request.superuser)
        return roles.superuser_of(identity.identity, INITDB_OPTIONS, start.base_id) or DEFAULT_SUPERUSER

    # -- the job -----------------------------------------------------------------------------
    def run(self, ctx: JobContext, request: PrepareRequest) -> dict[str, Any]:
        request = self.with_start(request)
        runtime = self.choose_runtime(ctx, request)
        try:
            return self._run_on(ctx, request, runtime)
        except (RuntimeFailure, RuntimeUnavailable, OSError):
            # the runtime may have gone away (daemon stopped): the next choice asks it again
            self.registry.forget_probe(runtime.name)
            raise

    def require_content_for_builds(self, request: PrepareRequest) -> None:
        """Raise ContentRequired when a step sent without content would have to be built."""
        request = self.with_start(request)
        runtime = self.choose_runtime(None, request)
        identity = self.identity_for(runtime, request.image, request.postgres_version)
        start = self.start_of(request, identity)
        items = self.plan(identity, request.steps, request.options, start,
                          superuser=self.superuser_for(request, identity, start))
        missing = [item.index for item in items if not item.cached and item.step is not None
                   and not item.step.has_content]
        if missing:
            raise ContentRequired(f"steps {missing} are not cached: send their content",
                                  details={"steps": missing})

    def _run_on(self, ctx: JobContext, request: PrepareRequest, runtime: Runtime) -> dict[str, Any]:
        identity = self.identity_for(runtime, request.image, request.postgres_version)
        start = self.start_of(request, identity)
        superuser = self.superuser_for(request, identity, start)
        items = self.plan(identity, request.steps, request.options, start, every_row=request.plan_only,
                          superuser=superuser)
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
                result["explain"] = explain(self.repo, identity, items, request, INITDB_OPTIONS, superuser)
            return result
        warned = self._warn(ctx, copies=not all(item.cached for item in items))

        named = self.named_instance(request.name)
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
        if not all(item.cached for item in items):
            self.before_build(ctx)
        final = self.builder.build(ctx, runtime, identity, items, tasks, request.options,
                                   instance_next=not request.build_only and request.instance_kind != "database",
                                   superuser=superuser)
        if request.build_only:
            return {"state_id": final.id, "instance_id": None, "runtime": runtime.name}
        ctx.check_cancel()
        started = time.monotonic()
        ctx.update_task(instance_task, TaskStatus.RUNNING, started_at=self.clock.now())
        if request.instance_kind == "database" and self.instances.databases is not None:
            instance = self.instances.databases.create(final, runtime, identity, name=request.name,
                                                       ephemeral=request.ephemeral, job_id=ctx.job.id,
                                                       ttl_seconds=request.ttl_seconds or 0)
        else:
            instance = self.instances.create(final, runtime, identity, name=request.name,
                                             ephemeral=request.ephemeral, job_id=ctx.job.id,
                                             ttl_seconds=request.ttl_seconds or 0,
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

    def named_instance(self, name: str | None) -> Instance | None:
        if not name:
            return None
        binding = self.repo.get_name(name)
        return self.repo.get_instance(binding.instance_id) if binding is not None else None

    def require_name_free(self, name: str | None) -> None:
        """Raise Conflict when `name` is bound to an instance (a new instance may not take it)."""
        named = self.named_instance(name)
        if named is not None:
            raise name_taken(name or "", named)


def name_taken(name: str, instance: Instance) -> Conflict:
    return Conflict(f"name {name!r} is bound to instance {instance.id}",
                    hint="--reuse keeps it when its state matches, --fresh replaces it, or choose another name")
