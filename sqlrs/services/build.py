"""Building a chain of states (the second half of a prepare job, services/prepare.py).

A build starts a scratch server on the deepest cached prefix (or initdb for the base), applies
each missing step with real psql (or the step kind's executor, services/steps), shuts the
server down cleanly, and commits the data directory as the next state (clone to a temporary
name, sync, rename, metadata row); the same scratch directory then continues with the next
step. Each state is built under its own lock, so two jobs that need the same missing state
build it once; a failed step leaves nothing of itself (the scratch goes, nothing is committed).
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

from sqlrs.domain import keys
from sqlrs.domain.errors import ContentRequired, NotFound, StepFailed, StoreFailure
from sqlrs.domain.model import State, Task, TaskStatus
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.postmaster import PG_HBA
from sqlrs.ports.repository import Repository
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.faults import crash_point
from sqlrs.services.instances import INSTANCE_USER, InstanceManager
from sqlrs.services.jobs import JobContext
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.output import OutputCollector
from sqlrs.services.scripts import command_args, first_error, materialize
from sqlrs.services.servers import Server
from sqlrs.services.steps import StepRun, executor_for, state_kind

# initdb options that shape the cluster: they enter the base id.
INITDB_OPTIONS = ("-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256")
# initdb options that only make it faster; durability comes from the sync at commit.
INITDB_SPEED = ("--no-sync",)
BASE_SQL = (f"CREATE ROLE {INSTANCE_USER} SUPERUSER LOGIN",)
FROM_KIND = "state"  # the plan's first row with --from: the existing state the chain starts from



def publish(store: SnapshotStore, directory: Path, target: Path, crash: str) -> None:
    """Make a finished state directory visible as `target` (states/<id>): synced first, so that a
    crash never leaves a half-written state there, and a leftover of a crash between that rename
    and the metadata row replaced. Every way a state is made (build, pull, snapshot) commits so;
    the caller removes `directory` when this raises. `crash`: the fault-injection point after the
    sync (services/faults.py)."""
    store.sync(directory)
    crash_point(crash)
    if target.exists():
        store.delete(target)
    os.rename(directory, target)

def added_bytes(store: SnapshotStore, parent: Path | None, target: Path) -> int:
    """Bytes the new state `target` adds to the cache: its allocation beyond its parent's (extents
    it shares with the parent count once, as the parent's); all of it without a parent on disk."""
    if parent is None or not parent.is_dir():
        return store.allocated_bytes([target])
    return max(0, store.allocated_bytes([parent, target]) - store.allocated_bytes([parent]))


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


class ChainBuilder:
    """Builds the missing states of a plan; see the module docstring."""

    def __init__(self, repo: Repository, store: SnapshotStore, layout: Layout, instances: InstanceManager,
                 admin: ServerAdmin, clock: Clock, locks: StateLocks,
                 after_commit: Callable[[JobContext, State], None]):
        self.repo = repo
        self.store = store
        self.layout = layout
        self.instances = instances
        self.admin = admin
        self.clock = clock
        self.locks = locks
        self.after_commit = after_commit  # e.g. evict other states when the cache is over its bounds

    def _acquire(self, ctx: JobContext, item: PlanItem) -> threading.Lock:
        lock = self.locks.get(item.state_id)
        if not lock.acquire(blocking=False):
            ctx.emit("log", stream="engine", text=f"waiting: another job is building state {item.state_id[:12]}")
            while not lock.acquire(timeout=0.2):
                ctx.check_cancel()
        return lock

    def build(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
              tasks: list[Task], options: PsqlOptions) -> State:
        """Build the plan's missing states in order (each under its lock); the final state."""
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
        else:  # -c, or a script that sends the SQL as -c does when it is too long for an argument
            command, humanize = command_args(step.sql or "", server.spec.scripts_dir / f"step{item.index}",
                                             lambda path: server.runtime.tool_path(server.spec, path))
            args += command
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
            publish(self.store, temporary, target, "commit:cloned")
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
            data_path=self.layout.state_rel(item.state_id),
            size_bytes=added_bytes(self.store, self._state_dir(item.parent_id), target),
            build_seconds=round(seconds, 3), created_at=now, last_used_at=now,
        )
        self.repo.add_state(state)
        scratch.at = item.state_id
        return state

    def _state_dir(self, state_id: str | None) -> Path | None:
        return self.layout.abs(self.layout.state_rel(state_id)) if state_id else None

    def _base_of(self, state_id: str) -> str:
        state = self.repo.get_state(state_id)
        return state.base_id if state is not None else state_id
