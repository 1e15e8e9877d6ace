"""Prepare jobs: plan a chain of states, build what is missing, start an instance.

A build starts a scratch server on the deepest cached prefix (or initdb for the base), applies
each missing step with real psql, shuts the server down cleanly, and commits the data directory
as the next state (clone to a temporary name, sync, rename, metadata row); the same scratch
directory then continues with the next step. Each state is built under its own lock, so two
jobs that need the same missing state build it once.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sqlrs.adapters.fsutil import syncfs
from sqlrs.adapters.pgfiles import PG_HBA
from sqlrs.domain import keys
from sqlrs.domain.errors import (
    Ambiguous,
    Conflict,
    ContentRequired,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
    StepFailed,
    StoreFailure,
    UsageError,
)
from sqlrs.domain.model import Instance, State, Task, TaskStatus
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.faults import crash_point
from sqlrs.services.instances import INSTANCE_USER, InstanceManager
from sqlrs.services.jobs import JobContext
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.requests import PrepareRequest
from sqlrs.services.runtimes import RuntimeRegistry
from sqlrs.services.scripts import first_error, materialize
from sqlrs.services.servers import Server
from sqlrs.services.steps import StepRun, executor_for, state_kind

# initdb options that shape the cluster: they enter the base id.
INITDB_OPTIONS = ("-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256")
# initdb options that only make it faster; durability comes from the sync at commit.
INITDB_SPEED = ("--no-sync",)
BASE_SQL = (f"CREATE ROLE {INSTANCE_USER} SUPERUSER LOGIN",)
FROM_KIND = "state"  # the plan's first row with --from: the existing state the chain starts from
OUTPUT_LINES_KEPT = 200


@attrs.define
class PlanItem:
    index: int
    kind: str  # "base" | "step"
    state_id: str
    parent_id: str | None
    source: str
    step: Step | None
    cached: bool
    remote: bool | None = None  # with a remote cache: not cached here, in the remote cache

    def to_json(self) -> dict[str, Any]:
        data = {"index": self.index, "kind": self.kind if self.step is None else self.step.kind,
                "source": self.source, "state_id": self.state_id, "parent_id": self.parent_id,
                "cached": self.cached}
        if self.remote is not None:
            data["remote"] = self.remote
        return data


@attrs.define
class ScratchSlot:
    """The job's scratch, if any: whatever is in it is removed when the build ends."""

    current: Scratch | None = None


@attrs.define
class Scratch:
    """The writable data directory a job builds in; `at` is the state it currently equals."""

    key: str
    rel: str
    at: str | None = None
    server: Server | None = None


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
        warnings: Callable[[], list[str]] = lambda: [],
        remote: Any = None,
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
        self.warnings = warnings  # shown to the user by a prepare job (e.g. the copy backend)
        self.remote = remote  # RemoteService: pulls from the remote cache instead of building

    # -- planning ----------------------------------------------------------------------------
    def identity_for(self, runtime: Runtime, image: str | None) -> RuntimeIdentity:
        if runtime.name == "native":
            return runtime.resolve(None)
        return runtime.resolve(image or self.default_image())

    def image_check(self, image: str | None) -> tuple[str, Callable[[Runtime], None]]:
        """For `auto`: a container runtime that cannot get the request's image is not available."""
        wanted = image or self.default_image()

        def can_get_image(runtime: Runtime) -> None:
            if runtime.name != "native":
                self.identity_for(runtime, wanted)  # raises RuntimeUnavailable when it cannot

        return wanted, can_get_image

    def choose_runtime(self, ctx: JobContext | None, request: PrepareRequest) -> Runtime:
        choice = self.registry.choose(request.runtime, self.image_check(request.image))
        if ctx is not None:
            for skipped in choice.skipped:
                ctx.emit("warning", text=f"runtime auto: skipped {skipped.name}: {skipped.reason}")
            ctx.emit("runtime", runtime=choice.runtime.name, reason=choice.reason)
        return choice.runtime

    def is_cached(self, state_id: str) -> bool:
        state = self.repo.get_state(state_id)
        return state is not None and self.layout.abs(state.data_path).is_dir()

    def plan(self, identity: RuntimeIdentity, steps: tuple[Step, ...], options: PsqlOptions,
             start: State | None = None) -> list[PlanItem]:
        if start is not None:
            return self._plan_from(start, steps, options)
        base = keys.base_id(identity.identity, INITDB_OPTIONS)
        items = [PlanItem(0, "base", base, None, "initdb", None, self.is_cached(base))]
        parent = base
        for index, (step, state_id) in enumerate(zip(steps, keys.chain(base, steps, options), strict=True), 1):
            items.append(PlanItem(index, "step", state_id, parent, step.source, step, self.is_cached(state_id)))
            parent = state_id
        return items

    # -- starting from an existing state (--from) -----------------------------------------------
    def _plan_from(self, start: State, steps: tuple[Step, ...], options: PsqlOptions) -> list[PlanItem]:
        """The chain on `start` instead of the base: state_k = H(start, step_k)."""
        items = [PlanItem(0, FROM_KIND, start.id, start.parent_id, start.source, None, self.is_cached(start.id))]
        parent = start.id
        for index, (step, state_id) in enumerate(zip(steps, keys.chain(start.id, steps, options), strict=True), 1):
            items.append(PlanItem(index, "step", state_id, parent, step.source, step, self.is_cached(state_id)))
            parent = state_id
        return items

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
        if state is None or not self.layout.abs(state.data_path).is_dir():
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
        if image is None and start.runtime != "native":
            image = self._image_of_base(start.base_id)
        return attrs.evolve(request, from_state=start.id, runtime=start.runtime, image=image)

    def _image_of_base(self, base_id: str) -> str | None:
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
        if keys.base_id(identity.identity, INITDB_OPTIONS) != start.base_id:
            raise UsageError(f"state {start.id[:12]} was not built by {identity.description}",
                             hint="pass the --image (and --runtime) the state was prepared with")
        return start

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
        identity = self.identity_for(runtime, request.image)
        items = self.plan(identity, request.steps, request.options, self.start_of(request, identity))
        missing = [item.index for item in items if not item.cached and item.step is not None
                   and not item.step.has_content]
        if missing:
            raise ContentRequired(f"steps {missing} are not cached: send their content",
                                  details={"steps": missing})

    def _run_on(self, ctx: JobContext, request: PrepareRequest, runtime: Runtime) -> dict[str, Any]:
        identity = self.identity_for(runtime, request.image)
        items = self.plan(identity, request.steps, request.options, self.start_of(request, identity))
        if self.remote is not None:
            self.remote.annotate(ctx, items)
        tasks = [Task(ctx.job.id, item.index, item.kind, item.state_id, item.source,
                      TaskStatus.CACHED if item.cached else TaskStatus.PENDING) for item in items]
        if not request.plan_only and not request.build_only:
            tasks.append(Task(ctx.job.id, len(items), "instance", None, "instance", TaskStatus.PENDING))
        ctx.set_tasks(tasks)
        plan = [item.to_json() for item in items]
        ctx.emit("plan", runtime=runtime.name, identity=identity.description, steps=plan)
        if request.image and runtime.name == "native":
            ctx.emit("warning", text=f"the native runtime ignores the image {request.image}: its states are "
                                     f"based on {identity.description}; use --runtime docker|podman for images")
        if request.plan_only:
            return {"plan": plan, "runtime": runtime.name}
        for text in self.warnings():
            ctx.emit("warning", text=text)

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
        final = self._build(ctx, runtime, identity, items, tasks, request.options)
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
                                             ttl_seconds=request.ttl_seconds or 0)
        if named is not None:
            ctx.emit("log", stream="engine", text=f"replacing instance {named.id} ({request.name})")
            self.instances.remove(named)
        ctx.update_task(instance_task, TaskStatus.DONE, state_id=final.id, finished_at=self.clock.now(),
                        seconds=round(time.monotonic() - started, 3))
        return self._result(instance, runtime, reused=False)

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

    def _acquire(self, ctx: JobContext, item: PlanItem) -> threading.Lock:
        lock = self.locks.get(item.state_id)
        if not lock.acquire(blocking=False):
            ctx.emit("log", stream="engine", text=f"waiting: another job is building state {item.state_id[:12]}")
            while not lock.acquire(timeout=0.2):
                ctx.check_cancel()
        return lock

    def _build(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
               tasks: list[Task], options: PsqlOptions) -> State:
        slot = ScratchSlot()
        final: State | None = None
        try:
            for item, task in zip(items, tasks, strict=False):
                ctx.check_cancel()
                lock = self._acquire(ctx, item)
                try:
                    existing = self.repo.get_state(item.state_id)
                    if existing is not None and self.layout.abs(existing.data_path).is_dir():
                        if task.status != TaskStatus.CACHED:  # built meanwhile by another job
                            ctx.update_task(task, TaskStatus.CACHED)
                        self.repo.touch_state(existing.id, self.clock.now(), hit=True)
                        final = existing
                        continue
                    if item.kind == FROM_KIND:  # removed since the job was planned: not buildable
                        raise NotFound(f"state {item.state_id[:12]} (--from) was removed",
                                       hint="list states with: sqlrs ls --states")
                    started = time.monotonic()
                    ctx.update_task(task, TaskStatus.RUNNING, started_at=self.clock.now())
                    try:
                        scratch = self._build_one(ctx, runtime, identity, item, slot, options)
                        final = self._commit(scratch, item, runtime, identity, options,
                                             time.monotonic() - started)
                    except BaseException:
                        ctx.update_task(task, TaskStatus.FAILED, finished_at=self.clock.now(),
                                        seconds=round(time.monotonic() - started, 3))
                        for later in tasks[task.index + 1 :]:
                            if later.status == TaskStatus.PENDING:
                                ctx.update_task(later, TaskStatus.SKIPPED)
                        raise
                    ctx.update_task(task, TaskStatus.DONE, finished_at=self.clock.now(),
                                    seconds=round(time.monotonic() - started, 3))
                    self.after_commit(ctx, final)
                finally:
                    lock.release()
        finally:
            if slot.current is not None:
                self._drop_scratch(slot.current)
        assert final is not None
        return final

    def _new_scratch(self, ctx: JobContext) -> Scratch:
        key = f"b{ctx.job.id[:6]}{secrets.token_hex(2)}"
        return Scratch(key=key, rel=f"scratch/{key}")

    def _drop_scratch(self, scratch: Scratch) -> None:
        if scratch.server is not None:
            scratch.server.discard()
        self.store.delete(self.layout.abs(scratch.rel))
        shutil.rmtree(self.layout.run_dir(scratch.key), ignore_errors=True)

    def _build_one(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, item: PlanItem,
                   slot: ScratchSlot, options: PsqlOptions) -> Scratch:
        scratch = slot.current
        if scratch is not None and scratch.at != item.parent_id:
            slot.current = None
            self._drop_scratch(scratch)
            scratch = None
        if scratch is None:
            # in the slot before anything is made, so a failure below still removes it
            scratch = slot.current = self._new_scratch(ctx)
            data_dir = self.layout.abs(scratch.rel)
            if item.parent_id is None:
                ctx.emit("log", stream="engine", text=f"initdb: {identity.description}")
                self.store.create(data_dir)
                runtime.initdb(identity, data_dir, (*INITDB_OPTIONS, *INITDB_SPEED))
                hba = data_dir / "pg_hba.conf"
                hba.write_text(PG_HBA)
                if os.geteuid() == 0 and identity.server_uid is not None:
                    os.chown(hba, identity.server_uid, identity.server_gid or -1)
            else:
                parent = self.repo.get_state(item.parent_id)
                if parent is None:
                    raise StoreFailure(f"state {item.parent_id[:12]} vanished while building on it")
                self.store.clone(self.layout.abs(parent.data_path), data_dir)
            scratch.at = item.parent_id
        ctx.check_cancel()
        if scratch.server is not None:  # the previous step's stopped server (a container) goes first
            scratch.server.discard()
            scratch.server = None
        scratch.server = self.instances.start_server(runtime, identity, scratch.key, scratch.rel)
        server = scratch.server
        if item.step is None:
            self.admin.execute(server.spec.run_dir, server.spec.port, BASE_SQL)
        else:
            self._run_step(ctx, server, item, options)
        ctx.check_cancel()
        server.stop()  # stays in scratch.server: a stopped container is removed with the scratch
        return scratch

    def _run_step(self, ctx: JobContext, server: Server, item: PlanItem, options: PsqlOptions) -> None:
        step = item.step
        assert step is not None
        if not step.has_content:  # it was cached when the job was submitted, and evicted since
            raise ContentRequired(f"step {item.index} ({step.source}) is no longer cached: send its content",
                                  details={"steps": [item.index]})
        executor = executor_for(step.kind)
        if executor is not None:  # not psql's: the kind's own module applies it (services/steps)
            executor.apply(StepRun(ctx, server, item.index, step, self.admin))
            return
        args = ["-X"]
        for name, value in options.variables:
            args += ["-v", f"{name}={value}"]
        args += ["-v", "ON_ERROR_STOP=1"]
        if options.single_transaction:
            args.append("-1")
        humanize: Callable[[str], str] = lambda text: text  # noqa: E731
        if step.kind == "file":
            directory = server.spec.scripts_dir / f"step{item.index}"
            materialized = materialize(step, directory, lambda path: server.runtime.tool_path(server.spec, path))
            humanize = materialized.humanize
            args += ["-f", materialized.entry]
        else:
            args += ["-c", step.sql or ""]
        collected = OutputCollector(lambda stream, text: ctx.emit("log", index=item.index, stream=stream,
                                                                   text=humanize(text)))
        code = server.runtime.exec_tool(server.spec, server.ref, "psql", args, collected.feed, ctx.cancel)
        collected.flush()
        ctx.check_cancel()
        if code != 0:
            output = humanize(collected.text())
            error = first_error(output)
            where = ""
            if error is not None and error.file:
                where = f" at {error.file}:{error.line}"
            message = error.message.splitlines()[0] if error else f"psql exited with {code}"
            raise StepFailed(
                f"step {item.index} ({step.source}) failed{where}: {message}",
                details={"step": item.index, "source": step.source, "file": error.file if error else None,
                         "line": error.line if error else None, "exit_code": code,
                         "psql_error": error.message if error else None, "output": output[-8000:]},
            )

    def _commit(self, scratch: Scratch, item: PlanItem, runtime: Runtime, identity: RuntimeIdentity,
                options: PsqlOptions, seconds: float) -> State:
        source = self.layout.abs(scratch.rel)
        temporary = self.layout.tmp_dir / f"{item.state_id}.{secrets.token_hex(4)}"
        target = self.layout.abs(self.layout.state_rel(item.state_id))
        self.store.clone(source, temporary)
        try:
            syncfs(temporary)
            crash_point("commit:cloned")
            if target.exists():  # a leftover of a crash between rename and metadata row
                self.store.delete(target)
            os.rename(temporary, target)
        except BaseException:
            self.store.delete(temporary)
            raise
        crash_point("commit:renamed")
        now = self.clock.now()
        state = State(
            id=item.state_id, parent_id=item.parent_id,
            base_id=item.state_id if item.parent_id is None else self._base_of(item.parent_id),
            step_hash=None if item.step is None else keys.step_hash(item.step, options),
            kind=state_kind(item.step), runtime=runtime.name,
            source=item.source if item.step is not None else f"initdb ({identity.version})",
            data_path=self.layout.state_rel(item.state_id), size_bytes=self._increment(item, target),
            build_seconds=round(seconds, 3), created_at=now, last_used_at=now,
        )
        self.repo.add_state(state)
        scratch.at = item.state_id
        return state

    def _increment(self, item: PlanItem, target: Path) -> int:
        """Bytes the new state adds to the cache: its allocation beyond its parent's (extents it
        shares with the parent count once, as the parent's)."""
        parent = self.layout.abs(self.layout.state_rel(item.parent_id)) if item.parent_id else None
        if parent is None or not parent.is_dir():
            return self.store.allocated_bytes([target])
        return max(0, self.store.allocated_bytes([parent, target]) - self.store.allocated_bytes([parent]))

    def _base_of(self, state_id: str) -> str:
        state = self.repo.get_state(state_id)
        return state.base_id if state is not None else state_id


def name_taken(name: str, instance: Instance) -> Conflict:
    return Conflict(f"name {name!r} is bound to instance {instance.id}",
                    hint="--reuse keeps it when its state matches, --fresh replaces it, or choose another name")


class OutputCollector:
    """Keeps a tool's output for error messages and forwards whole lines as they arrive."""

    def __init__(self, forward: Callable[[str, str], None]):
        self._forward = forward
        self._kept: list[str] = []
        self._partial: dict[str, str] = {}
        self._forwarded = 0

    def feed(self, stream: str, data: bytes) -> None:
        text = self._partial.get(stream, "") + data.decode("utf-8", "replace")
        *lines, self._partial[stream] = text.split("\n")
        for line in lines:
            self._take(stream, line)

    def _take(self, stream: str, line: str) -> None:
        self._kept.append(line)
        if len(self._kept) > 4 * OUTPUT_LINES_KEPT:
            del self._kept[: len(self._kept) - 2 * OUTPUT_LINES_KEPT]
        if self._forwarded < OUTPUT_LINES_KEPT:
            self._forward(stream, line)
            self._forwarded += 1
        elif self._forwarded == OUTPUT_LINES_KEPT:
            self._forward("note", "(more output not shown)")
            self._forwarded += 1

    def flush(self) -> None:
        for stream, rest in list(self._partial.items()):
            if rest:
                self._take(stream, rest)
        self._partial.clear()

    def text(self) -> str:
        return "\n".join(self._kept)

