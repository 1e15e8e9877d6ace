"""Building a chain of states (the second half of a prepare job, services/prepare.py).

A build starts one scratch server on the deepest kept state of the chain (or initdb for the
base) and applies every missing step in it with real psql (or the step kind's executor,
services/steps), without stopping it between steps. After each step the checkpoint policy
(domain/checkpoints.py) decides whether to keep the step's state:

- kept, mid-chain: `CHECKPOINT` in the running server, then a store clone of its data directory
  (PostgreSQL recovers such a clone like a crash, from that checkpoint: nothing to redo);
- kept, the last step: a clean shutdown, and the scratch directory itself becomes the state;
- not kept: only its identity is recorded, with the next kept state (`UnkeptState`).

Finished states wait in `tmp/` and are published together (catalog.publish: one sync, renames,
metadata rows), at the end of the build, on failure (what was kept before the failing step
stays), and every PUBLISH_EVERY_SECONDS in a long build. Each state of the chain is built under
its own lock, held to the end of the build, so two jobs that need the same missing states build
them once: the second waits, then finds them kept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sqlrs.domain import keys, roles
from sqlrs.domain.checkpoints import CheckpointPolicy, Reason, branch_point
from sqlrs.domain.errors import ContentRequired, NoSpace, NotFound, StepFailed, StoreFailure
from sqlrs.domain.model import State, Task, TaskStatus, UnkeptState
from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.admin import ServerAdmin
from sqlrs.ports.clock import Clock
from sqlrs.ports.postmaster import PG_HBA
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import EarlierClone, SnapshotStore
from sqlrs.services.catalog import Finished, StateCatalog
from sqlrs.services.instances import InstanceManager
from sqlrs.services.jobs import JobContext
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.output import OutputCollector
from sqlrs.services.scripts import command_args, first_error, materialize
from sqlrs.services.servers import Server
from sqlrs.services.standby import StandbyClones
from sqlrs.services.steps import StepRun, executor_for, state_kind
from sqlrs.services.steps.base import ToolSession

# initdb options that shape the cluster: they enter the base id.
INITDB_OPTIONS = ("-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                  # 1 MiB WAL segments, not 16: every state and every copy of one carries its current
                  # segment, mostly empty in a test database
                  "--wal-segsize=1")
# initdb options that only make it faster; durability comes from the sync at commit.
INITDB_SPEED = ("--no-sync",)
FROM_KIND = "state"  # the plan's first row with --from: the existing state the chain starts from
# A build server is quiet between steps (no autovacuum, no clients), so a clone of its running data
# directory right after CHECKPOINT holds exactly that checkpoint.
BUILD_SETTINGS = {"autovacuum": "off"}
# A long build publishes what it kept so far at least this often (one sync each time).
PUBLISH_EVERY_SECONDS = 30.0


@attrs.define
class PlanItem:
    index: int
    kind: str  # "base" | "step" | FROM_KIND
    state_id: str
    parent_id: str | None
    source: str
    step: Step | None
    cached: bool  # nothing to run for it: it is kept, or a kept state deeper in the chain covers it
    remote: bool | None = None  # with a remote cache: not cached here, in the remote cache
    kept: bool = False  # its data directory is here
    known: bool = False  # an earlier build passed it without keeping it
    keep: str | None = None  # why it is or will be kept (Reason); None: kept when its replay cost pays

    @property
    def checkpoint(self) -> bool:
        return self.kept or self.keep is not None

    def to_json(self) -> dict[str, Any]:
        data = {"index": self.index, "kind": self.kind if self.step is None else self.step.kind,
                "source": self.source, "state_id": self.state_id, "parent_id": self.parent_id,
                "cached": self.cached, "checkpoint": self.checkpoint, "keep": self.keep}
        if self.remote is not None:
            data["remote"] = self.remote
        return data


def mark_cached(items: list[PlanItem], catalog: StateCatalog, every_row: bool = False) -> int:
    """Mark the rows a kept state covers as cached (the deepest kept state and all before it);
    the index of that state, or -1. A prepare needs only that state (one lookup on a hit);
    `every_row` also tells, for the rows before it, which are kept (plan:* shows it)."""
    deepest = -1
    for item in reversed(items):
        if catalog.is_kept(item.state_id):
            item.kept = True
            deepest = item.index
            break
    for item in items:
        item.cached = item.index <= deepest
        if item.index < deepest and (every_row or item.index == 0):
            item.kept = catalog.is_kept(item.state_id)
    return deepest


def mark_plan(items: list[PlanItem], catalog: StateCatalog, policy: CheckpointPolicy,
              every_row: bool = False) -> list[PlanItem]:
    """Fill in what is kept, cached and known, and which rows will be kept whatever they cost."""
    deepest = mark_cached(items, catalog, every_row)
    known = catalog.known_unkept([item.state_id for item in items[deepest + 1 :]])
    for item in items[deepest + 1 :]:
        item.known = item.state_id in known
    branch = branch_point([item.known for item in items], [item.kept for item in items])
    last = len(items) - 1
    for item in items:
        if item.index == 0 and (item.kept or not item.cached):
            item.keep = Reason.START
        elif not item.cached:
            item.keep = policy.forced(item.index, last, item.index == branch)
    return items


class CheckpointCosts:
    """What keeping a state costs on this store, measured: the clone of the running cluster and
    its share of the sync at publication (moving averages over this engine's builds). Until a keep
    is measured, the clone that starts a build's scratch stands in (a whole clone: on a copy
    store more than a keep that shares unchanged files)."""

    def __init__(self, first_guess: float = 0.1):
        self._first_guess = first_guess
        self._keep: float | None = None
        self._sync = 0.0
        self._lock = threading.Lock()

    def estimate(self) -> float:
        with self._lock:
            return (self._first_guess if self._keep is None else self._keep) + self._sync

    def cloned(self, seconds: float) -> None:
        with self._lock:
            if self._keep is None:
                self._first_guess = seconds

    def kept(self, seconds: float) -> None:
        with self._lock:
            self._keep = seconds if self._keep is None else 0.5 * self._keep + 0.5 * seconds

    def synced(self, seconds: float, states: int) -> None:
        if states:
            with self._lock:
                self._sync = 0.5 * self._sync + 0.5 * seconds / states


@attrs.define
class Scratch:
    """The writable data directory a job builds in, and its server (running between steps)."""

    key: str
    rel: str
    at: str | None = None  # the state it equals
    server: Server | None = None


@attrs.define
class BuildRun:
    """One job's build: its scratch, the states finished but not yet published, the unkept
    states since the last kept one, and the locks it holds."""

    ctx: JobContext
    runtime: Runtime
    identity: RuntimeIdentity
    options: PsqlOptions
    scratch: Scratch | None = None
    pending: list[Finished] = attrs.Factory(list)
    span: list[UnkeptState] = attrs.Factory(list)
    replay_seconds: float = 0.0  # steps since the last kept state
    last_kept: str | None = None
    held: list[threading.Lock] = attrs.Factory(list)
    published_at: float = 0.0  # clock.monotonic() of the last publication (or the start)
    published: list[State] = attrs.Factory(list)
    # the last kept state as a clone of the scratch: a copy store shares unchanged files with it
    earlier: EarlierClone | None = None
    sessions: dict[str, ToolSession] = attrs.Factory(dict)  # host tools kept running between steps
    superuser: str = roles.DEFAULT_SUPERUSER  # the chain's bootstrap superuser (sqlrs.domain.roles)


class ChainBuilder:
    """Builds the missing states of a plan; see the module docstring."""

    def __init__(self, catalog: StateCatalog, store: SnapshotStore, layout: Layout, instances: InstanceManager,
                 admin: ServerAdmin, clock: Clock, locks: StateLocks,
                 after_commit: Callable[[JobContext, State], None],
                 policy: CheckpointPolicy | None = None,
                 make_room: Callable[[JobContext, int], object] = lambda ctx, needed: None,
                 standby: StandbyClones | None = None):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = store
        self.layout = layout
        self.instances = instances
        self.admin = admin
        self.clock = clock
        self.locks = locks
        self.after_commit = after_commit  # e.g. evict other states when the cache is over its bounds
        self.policy = policy or CheckpointPolicy()
        self.costs = CheckpointCosts()
        self.make_room = make_room  # evict to free that many bytes (a clone ran out of space)
        self.standby = standby  # takes the scratch of a finished build for the instance it is for

    def _clone(self, run: BuildRun, source: Path, target: Path, earlier: EarlierClone | None = None) -> None:
        """A store clone; when the store's filesystem is full, the cache makes room and it is tried again."""
        try:
            self.store.clone(source, target, earlier)
        except NoSpace:
            try:
                self.make_room(run.ctx, self.store.allocated_bytes([source]))
            except NoSpace:
                pass  # nothing to evict: the clone's own error says it better
            else:
                self.store.clone(source, target, earlier)
                return
            raise

    # -- locks ---------------------------------------------------------------------------------
    def _acquire(self, run: BuildRun, item: PlanItem) -> bool:
        """Hold the state's lock for the rest of the build; True when another job held it."""
        lock = self.locks.get(item.state_id)
        waited = False
        if not lock.acquire(blocking=False):
            waited = True
            run.ctx.emit("log", stream="engine", text=f"waiting: another job is building state {item.state_id[:12]}")
            while not lock.acquire(timeout=0.2):
                run.ctx.check_cancel()
        run.held.append(lock)
        return waited

    def _deepest_kept(self, items: list[PlanItem], start: int) -> int:
        """The index of the deepest kept state among items[start:], or start - 1."""
        for item in reversed(items[start:]):
            if self.catalog.is_kept(item.state_id):
                return item.index
        return start - 1

    # -- the build -------------------------------------------------------------------------------
    def build(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
              tasks: list[Task], options: PsqlOptions, instance_next: bool = False,
              superuser: str = roles.DEFAULT_SUPERUSER) -> State:
        """Build the plan's missing states in order; the final state (kept). `instance_next`: an
        instance of it is made right after: the scratch, equal to it, is kept for that instance
        (a standby clone) instead of being deleted."""
        run = BuildRun(ctx, runtime, identity, options, published_at=self.clock.monotonic(), superuser=superuser)
        built = False
        try:
            self._build(run, items, tasks)
            if instance_next and run.scratch is not None and run.scratch.server is None \
                    and run.scratch.at == items[-1].state_id and self.standby is not None:
                self._publish(run)  # the state first: its standby clone must not outlive it unseen
                if self.standby.adopt(items[-1].state_id, self.layout.abs(run.scratch.rel)):
                    shutil.rmtree(self.layout.run_dir(run.scratch.key), ignore_errors=True)
                    run.scratch = None
            built = True
        finally:
            for session in run.sessions.values():
                session.close()
            try:
                self._publish(run)
            finally:
                if run.scratch is not None:
                    self._drop_scratch(run.scratch)
                    run.scratch = None
                try:
                    # with the scratch gone (its bytes are no one's now) and the states still locked
                    # (eviction passes over what a build holds)
                    if built and run.published:
                        self.after_commit(ctx, run.published[-1])
                    final = self.catalog.kept(items[-1].state_id) if built else None
                finally:
                    for lock in reversed(run.held):
                        lock.release()
        if final is None:
            raise StoreFailure(f"state {items[-1].state_id[:12]} vanished right after it was built")
        return final

    def _build(self, run: BuildRun, items: list[PlanItem], tasks: list[Task]) -> None:
        ctx = run.ctx
        index = self._deepest_kept(items, 0) + 1
        if index == 0 and items[0].kind == FROM_KIND:  # removed since the job was planned: not buildable
            raise NotFound(f"state {items[0].state_id[:12]} (--from) was removed",
                           hint="list states with: sqlrs ls --states")
        self._skip(ctx, items, tasks, index)
        if index >= len(items):
            self.repo.touch_state(items[-1].state_id, self.clock.now(), hit=True)
            return
        run.last_kept = items[index - 1].state_id if index > 0 else None
        known = [item.known for item in items]
        kept = [item.kept for item in items]
        branch = branch_point(known, kept)
        last = len(items) - 1
        while index < len(items):
            item, task = items[index], tasks[index]
            ctx.check_cancel()
            if self._acquire(run, item):  # another job built: maybe further than this one has come
                deepest = self._deepest_kept(items, index)
                if deepest >= index:
                    self._skip(ctx, items, tasks, deepest + 1)
                    if run.scratch is not None:
                        self._drop_scratch(run.scratch)
                        run.scratch = None
                    run.span, run.replay_seconds, run.last_kept = [], 0.0, items[deepest].state_id
                    index = deepest + 1
                    continue
            started = self.clock.monotonic()
            ctx.update_task(task, TaskStatus.RUNNING, started_at=self.clock.now())
            try:
                server = self._server_at(run, item)
                if item.step is None:
                    if roles.base_sql(run.superuser):
                        self.admin.execute(server.spec.run_dir, server.spec.port, roles.base_sql(run.superuser),
                                           user=run.superuser)
                else:
                    self._run_step(run, server, item)
                ctx.check_cancel()
                seconds = self.clock.monotonic() - started
                assert run.scratch is not None
                run.scratch.at = item.state_id
                run.replay_seconds += seconds
                reason = (Reason.START if item.index == 0 else
                          self.policy.forced(item.index, last, item.index == branch))
                if reason is None and self.policy.pays(run.replay_seconds, self.costs.estimate()):
                    reason = Reason.PAYS
                replayed = run.replay_seconds
                if reason is not None:
                    self._keep(run, item, final=item.index == last)
                else:
                    run.span.append(UnkeptState(
                        id=item.state_id, parent_id=item.parent_id or "", step_hash=self._step_hash(item, run),
                        kind=state_kind(item.step), source=item.source, build_seconds=round(seconds, 3),
                        kept_id="", position=len(run.span), created_at=self.clock.now()))
            except BaseException:
                ctx.update_task(task, TaskStatus.FAILED, finished_at=self.clock.now(),
                                seconds=round(self.clock.monotonic() - started, 3))
                for later in tasks[task.index + 1 :]:
                    if later.status == TaskStatus.PENDING:
                        ctx.update_task(later, TaskStatus.SKIPPED)
                raise
            ctx.update_task(task, TaskStatus.DONE, finished_at=self.clock.now(),
                            seconds=round(self.clock.monotonic() - started, 3))
            if reason is not None:
                ctx.emit("checkpoint", index=item.index, state_id=item.state_id, reason=reason,
                         replay_seconds=round(replayed, 3), keep_seconds=round(self.costs.estimate(), 3))
                # the base is shared by every chain of its runtime: it need not wait for this one
                if item.step is None or self.clock.monotonic() - run.published_at >= PUBLISH_EVERY_SECONDS:
                    self._publish(run)
            index += 1

    def _skip(self, ctx: JobContext, items: list[PlanItem], tasks: list[Task], upto: int) -> None:
        """Rows before `upto` need no work: a kept state at or after them covers them."""
        for task in tasks[:upto]:
            if task.status not in (TaskStatus.CACHED, TaskStatus.DONE):
                ctx.update_task(task, TaskStatus.CACHED)
        for item in items[:upto]:
            item.cached = True

    @staticmethod
    def _step_hash(item: PlanItem, run: BuildRun) -> str:
        assert item.step is not None
        return keys.step_hash(item.step, run.options)

    # -- the scratch server ------------------------------------------------------------------------
    def _server_at(self, run: BuildRun, item: PlanItem) -> Server:
        """The running build server, its data equal to the item's parent state."""
        scratch = run.scratch
        if scratch is not None and scratch.at != item.parent_id:
            self._drop_scratch(scratch)
            scratch = run.scratch = None
        if scratch is None:
            key = f"b{run.ctx.job.id[:6]}{secrets.token_hex(2)}"
            # in the run before anything is made, so a failure below still removes it
            scratch = run.scratch = Scratch(key=key, rel=f"scratch/{key}")
            data_dir = self.layout.abs(scratch.rel)
            if item.parent_id is None:
                run.ctx.emit("log", stream="engine", text=f"initdb: {run.identity.description}")
                self.store.create(data_dir)
                run.runtime.initdb(run.identity, data_dir, (*roles.initdb_options(INITDB_OPTIONS, run.superuser),
                                                            *INITDB_SPEED))
                hba = data_dir / "pg_hba.conf"
                hba.write_text(PG_HBA)
                if os.geteuid() == 0 and run.identity.server_uid is not None:
                    os.chown(hba, run.identity.server_uid, run.identity.server_gid or -1)
            else:
                parent = self.catalog.kept(item.parent_id)
                if parent is None:
                    raise StoreFailure(f"state {item.parent_id[:12]} vanished while building on it")
                taken_at, started = time.time(), self.clock.monotonic()
                self._clone(run, self.layout.abs(parent.data_path), data_dir)
                self.costs.cloned(self.clock.monotonic() - started)
                run.earlier = EarlierClone(self.layout.abs(parent.data_path), taken_at)
            scratch.at = item.parent_id
        run.ctx.check_cancel()
        if scratch.server is None:
            scratch.server = self.instances.start_server(run.runtime, run.identity, scratch.key, scratch.rel,
                                                         settings=BUILD_SETTINGS)
        return scratch.server

    def _drop_scratch(self, scratch: Scratch) -> None:
        if scratch.server is not None:
            scratch.server.discard()
        self.store.delete(self.layout.abs(scratch.rel))
        shutil.rmtree(self.layout.run_dir(scratch.key), ignore_errors=True)

    # -- keeping a state ---------------------------------------------------------------------------
    def _keep(self, run: BuildRun, item: PlanItem, final: bool) -> None:
        """Put the scratch's current data aside in tmp/ as the item's state, to be published."""
        scratch = run.scratch
        assert scratch is not None and scratch.server is not None
        source = self.layout.abs(scratch.rel)
        temporary = self.layout.tmp_dir / f"{item.state_id}.{secrets.token_hex(4)}"
        started = self.clock.monotonic()
        taken_at = time.time()
        if final:
            # the build ends here: a clean shutdown, and the scratch directory becomes the state
            # (on a copy store a clone sharing what did not change with the last kept state is
            # smaller: it is made instead when there is one)
            scratch.server.stop()
            scratch.server.discard()
            scratch.server = None
            if run.earlier is None:
                os.rename(source, temporary)
                run.scratch = None
                shutil.rmtree(self.layout.run_dir(scratch.key), ignore_errors=True)
            else:
                self._clone(run, source, temporary, run.earlier)
                scratch.at = item.state_id  # stopped, equal to the state: the instance may start on it
        else:
            try:
                self._clone_running(run, scratch.server, source, temporary)
            except BaseException:
                self.store.delete(temporary)
                raise
            if run.earlier is not None:
                self.costs.kept(self.clock.monotonic() - started)
            else:  # a whole clone (nothing kept before it to share with): a first guess only
                self.costs.cloned(self.clock.monotonic() - started)
        run.earlier = EarlierClone(temporary, taken_at)
        now = self.clock.now()
        span = [attrs.evolve(unkept, kept_id=item.state_id, position=position)
                for position, unkept in enumerate(run.span)]
        state = State(
            id=item.state_id, parent_id=run.last_kept,
            base_id=item.state_id if item.parent_id is None else self._base_of(run, item),
            step_hash=None if item.step is None else self._step_hash(item, run),
            kind=state_kind(item.step), runtime=run.runtime.name,
            source=item.source if item.step is not None else f"initdb ({run.identity.version})",
            data_path=self.layout.state_rel(item.state_id), size_bytes=0,
            build_seconds=round(run.replay_seconds, 3), created_at=now, last_used_at=now,
        )
        run.pending.append(Finished(temporary, state, span))
        run.span, run.replay_seconds, run.last_kept = [], 0.0, item.state_id

    def _clone_running(self, run: BuildRun, server: Server, source: Path, target: Path) -> None:
        """Clone the running build server's data directory as a crash-consistent state: after a
        CHECKPOINT nothing writes to it, and a checkpoint that completes during the clone (seen as
        a change of pg_control) makes the build fall back to stop, clone, start."""
        self.admin.execute(server.spec.run_dir, server.spec.port, ["CHECKPOINT"])
        control = _read_control(source)
        self._clone(run, source, target, run.earlier)
        if control is None or _read_control(source) != control:
            self.store.delete(target)
            server.stop()
            self._clone(run, source, target, run.earlier)
            server.start()
        with contextlib.suppress(FileNotFoundError):
            (target / "postmaster.pid").unlink()

    def _publish(self, run: BuildRun) -> None:
        if not run.pending:
            return
        pending, run.pending = run.pending, []
        started = self.clock.monotonic()
        try:
            run.published += self.catalog.publish(pending, synced="commit:cloned", renamed="commit:renamed")
        except BaseException:
            for finished in pending:
                self.store.delete(finished.directory)
            raise
        self.costs.synced(self.clock.monotonic() - started, len(pending))
        run.published_at = self.clock.monotonic()
        for finished in pending:  # the last kept state moved from tmp/ to states/
            if run.earlier is not None and run.earlier.path == finished.directory:
                run.earlier = attrs.evolve(run.earlier, path=self.catalog.directory(finished.state.id))

    def _base_of(self, run: BuildRun, item: PlanItem) -> str:
        for finished in run.pending:
            if finished.state.id == run.last_kept:
                return finished.state.base_id
        parent = self.repo.get_state(run.last_kept) if run.last_kept else None
        return parent.base_id if parent is not None else item.state_id

    # -- one step ----------------------------------------------------------------------------------
    def _run_step(self, run: BuildRun, server: Server, item: PlanItem) -> None:
        ctx, options = run.ctx, run.options
        step = item.step
        assert step is not None
        if not step.has_content:  # it was cached when the job was submitted, and evicted since
            raise ContentRequired(f"step {item.index} ({step.source}) is no longer cached: send its content",
                                  details={"steps": [item.index]})
        executor = executor_for(step.kind)
        if executor is not None:  # not psql's: the kind's own module applies it (services/steps)
            executor.apply(StepRun(ctx, server, item.index, step, self.admin, run.sessions))
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
        code = server.runtime.exec_tool(server.spec, server.ref, "psql", args, collected.feed, ctx.cancel,
                                        env={"PGUSER": run.superuser})
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
                         "psql_error": error.message if error else None,
                         "context": error.message.splitlines()[1:] if error else [], "output": output[-8000:]},
            )


def _read_control(data_dir: Path) -> bytes | None:
    """The cluster's pg_control, or None when the engine cannot read it."""
    try:
        return (data_dir / "global" / "pg_control").read_bytes()
    except OSError:
        return None


