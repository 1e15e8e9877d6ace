"""Building a chain of states (the second half of a prepare job, services/prepare.py).

A build starts one scratch server on the deepest kept state of the chain (or initdb for the
base) and applies every missing step in it (its kind's executor, services/states/steps), without
stopping it between steps. After each step the checkpoint policy (domain/checkpoints.py)
decides whether to keep the step's state (keeping.py: a clone of the running server mid-chain,
the scratch itself after the last step); a state not kept is recorded with the next kept one
(`UnkeptState`).

Finished states wait in `tmp/` and are published together (catalog.publish: one sync, renames,
metadata rows), at the end of the build, on failure (what was kept before the failing step
stays), and every PUBLISH_EVERY_SECONDS in a long build. Each state of the chain is built under
its own lock, held to the end of the build, so two jobs that need the same missing states build
them once: the second waits, then finds them kept.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from typing import cast

import attrs

from sqlrs.domain import roles
from sqlrs.domain.checkpoints import CheckpointPolicy, Reason, branch_point
from sqlrs.domain.errors import ContentRequired, NotFound, StoreFailure
from sqlrs.domain.model import State, Task, TaskStatus
from sqlrs.domain.steps import PsqlOptions
from sqlrs.ports.postmaster import PG_HBA
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import EarlierClone
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.servers import Server
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.cache import CacheService
from sqlrs.services.states.catalog import StateCatalog
from sqlrs.services.states.keeping import BuildRun, Scratch, StateKeeper
from sqlrs.services.states.plan import FROM_KIND, PlanItem
from sqlrs.services.states.steps import Prestarting, SendsAhead, StepRun, executor_for
from sqlrs.services.states.steps.idle_runners import IdleRunners


@attrs.frozen
class Built:
    final: State  # the chain's last state, kept
    published: tuple[State, ...] = ()  # the states this build kept (others' builds may have kept the rest)


# initdb options that only make it faster; durability comes from the sync at commit.
INITDB_SPEED = ("--no-sync",)
# A build server is quiet between steps (no autovacuum, no clients), so a clone of its running data
# directory right after CHECKPOINT holds exactly that checkpoint.
BUILD_SETTINGS = {"autovacuum": "off"}
# A long build publishes what it kept so far at least this often (one sync each time).
PUBLISH_EVERY_SECONDS = 30.0


class ChainBuilder:
    """Builds the missing states of a plan; see the module docstring."""

    def __init__(self, catalog: StateCatalog, servers: ServerInstances, cache: CacheService,
                 policy: CheckpointPolicy | None = None, runners: IdleRunners | None = None):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = catalog.store
        self.layout = catalog.layout
        self.locks = catalog.locks
        self.servers = servers  # start the build servers; their standby clones take a finished scratch
        self.admin = servers.admin
        self.clock = servers.clock
        self.cache = cache  # keeps the cache within its bounds before a build and after it
        self.policy = policy or CheckpointPolicy()
        self.keeper = StateKeeper(catalog, servers, cache)
        self.runners = runners  # host runners a build leaves to the next one (steps/idle_runners.py)

    # -- locks ---------------------------------------------------------------------------------
    def _acquire(self, run: BuildRun, item: PlanItem) -> bool:
        """Hold the state's lock for the rest of the build; True when another job held it."""
        if self._hold_if_free(run, item):  # (or held already: _prestart, _send_ahead)
            return False
        lock = self.locks.get(item.state_id)
        run.ctx.emit("log", stream="engine", text=f"waiting: another job is building state {item.state_id[:12]}")
        while not lock.acquire(timeout=0.2):
            run.ctx.check_cancel()
        run.held.append(lock)
        return True

    def _hold_if_free(self, run: BuildRun, item: PlanItem) -> bool:
        """Hold the state's lock for the rest of the build if no other job holds it; True when
        this build holds it (now or before)."""
        lock = self.locks.get(item.state_id)
        if any(held is lock for held in run.held):
            return True
        if not lock.acquire(blocking=False):
            return False
        run.held.append(lock)
        return True

    def _deepest_kept(self, items: list[PlanItem], start: int) -> int:
        """The index of the deepest kept state among items[start:], or start - 1."""
        for item in reversed(items[start:]):
            if self.catalog.is_kept(item.state_id):
                return item.index
        return start - 1

    # -- the build -------------------------------------------------------------------------------
    def build(self, ctx: JobContext, runtime: Runtime, identity: RuntimeIdentity, items: list[PlanItem],
              tasks: list[Task], options: PsqlOptions, instance_next: bool = False,
              superuser: str = roles.DEFAULT_SUPERUSER) -> Built:
        """Build the plan's missing states in order (first making room in the cache when anything
        is missing); the final state (kept), and the states this build published. `instance_next`:
        an instance of it is made right after: the scratch, equal to it, is kept for that instance
        (a standby clone) instead of being deleted."""
        if not all(item.cached for item in items):
            self.cache.before_build(ctx)
        run = BuildRun(ctx, runtime, identity, options, published_at=self.clock.monotonic(), superuser=superuser)
        built = False
        try:
            self._build(run, items, tasks)
            if instance_next and run.scratch is not None and run.scratch.server is None \
                    and run.scratch.at == items[-1].state_id and self.servers.standby is not None:
                self.keeper.publish(run)  # the state first: its standby clone must not outlive it unseen
                if self.servers.standby.adopt(items[-1].state_id, self.layout.abs(run.scratch.rel)):
                    shutil.rmtree(self.layout.run_dir(run.scratch.key), ignore_errors=True)
                    run.scratch = None
            built = True
        finally:
            for key, session in run.sessions.items():
                if built and self.runners is not None and session.reusable:
                    self.runners.put(key, session)  # (a dead one is stopped there)
                else:
                    session.close()
            try:
                self.keeper.publish(run)
            finally:
                if run.scratch is not None:
                    self._drop_scratch(run.scratch)
                    run.scratch = None
                try:
                    # with the scratch gone (its bytes are no one's now) and the states still locked
                    # (eviction passes over what a build holds)
                    if built and run.published:
                        self.cache.after_commit(ctx, run.published[-1])
                    final = self.catalog.kept(items[-1].state_id) if built else None
                finally:
                    for lock in reversed(run.held):
                        lock.release()
        if final is None:
            raise StoreFailure(f"state {items[-1].state_id[:12]} vanished right after it was built")
        return Built(final, tuple(run.published))

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
        self._prestart(run, items[index])
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
                if reason is None and self.policy.pays(run.replay_seconds, self.keeper.costs.estimate()):
                    reason = Reason.PAYS
                replayed = run.replay_seconds
                if reason is not None:
                    self.keeper.keep(run, item, final=item.index == last)
                else:
                    run.span.append(self.keeper.span_entry(run, item, seconds))
                    if index + 1 < len(items):
                        self._send_ahead(run, items[index + 1])
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
                         replay_seconds=round(replayed, 3), keep_seconds=round(self.keeper.costs.estimate(), 3))
                # the base is shared by every chain of its runtime: it need not wait for this one
                if item.step is None or self.clock.monotonic() - run.published_at >= PUBLISH_EVERY_SECONDS:
                    self.keeper.publish(run)
            index += 1

    def _prestart(self, run: BuildRun, first: PlanItem) -> None:
        """Let the first step's tool start loading while its server is made (steps.Prestarting).
        Not when another job builds that step: this one waits for it, its tool would only take
        the CPU from that build. Its lock is then held from here on, as `_acquire` holds it; it is
        the first the build takes, so the chain order of the locks stays (initdb comes first:
        no prestart then)."""
        if first.step is None:
            return
        executor = executor_for(first.step.kind)
        if isinstance(executor, Prestarting) and self._hold_if_free(run, first):
            # no server yet: a prestart only starts the tool (its requests bring the connection)
            executor.prestart(StepRun(run.ctx, cast(Server, None), first.index, first.step, self.admin, run.sessions,
                                      run.options, run.superuser, self.runners))

    def _send_ahead(self, run: BuildRun, item: PlanItem) -> None:
        """Start the next step on the build server (not kept: it is where that step begins) before
        this one's task row and events are written (steps.SendsAhead); with its lock taken, as
        `_acquire` takes it. Not when another job builds it: the loop then waits for that job."""
        scratch = run.scratch
        if item.step is None or scratch is None or scratch.server is None:
            return
        executor = executor_for(item.step.kind)
        if not isinstance(executor, SendsAhead):
            return
        if not self._hold_if_free(run, item):
            return
        executor.send_ahead(StepRun(run.ctx, scratch.server, item.index, item.step, self.admin, run.sessions,
                                    run.options, run.superuser, self.runners))

    def _skip(self, ctx: JobContext, items: list[PlanItem], tasks: list[Task], upto: int) -> None:
        """Rows before `upto` need no work: a kept state at or after them covers them."""
        for task in tasks[:upto]:
            if task.status not in (TaskStatus.CACHED, TaskStatus.DONE):
                ctx.update_task(task, TaskStatus.CACHED)
        for item in items[:upto]:
            item.cached = True


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
                run.runtime.initdb(run.identity, data_dir, (*roles.initdb_options(roles.INITDB_OPTIONS, run.superuser),
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
                self.keeper.clone(run, self.layout.abs(parent.data_path), data_dir)
                self.keeper.costs.cloned(self.clock.monotonic() - started)
                run.earlier = EarlierClone(self.layout.abs(parent.data_path), taken_at)
            scratch.at = item.parent_id
        run.ctx.check_cancel()
        if scratch.server is None:
            scratch.server = self.servers.start_server(run.runtime, run.identity, scratch.key, scratch.rel,
                                                         settings=BUILD_SETTINGS)
        return scratch.server

    def _drop_scratch(self, scratch: Scratch) -> None:
        if scratch.server is not None:
            scratch.server.discard()
        self.store.delete(self.layout.abs(scratch.rel))
        shutil.rmtree(self.layout.run_dir(scratch.key), ignore_errors=True)

    # -- keeping a state ---------------------------------------------------------------------------
    # -- one step ----------------------------------------------------------------------------------
    def _run_step(self, run: BuildRun, server: Server, item: PlanItem) -> None:
        step = item.step
        assert step is not None
        if not step.has_content:  # it was cached when the job was submitted, and evicted since
            raise ContentRequired(f"step {item.index} ({step.source}) is no longer cached: send its content",
                                  details={"steps": [item.index]})
        executor_for(step.kind).apply(StepRun(run.ctx, server, item.index, step, self.admin, run.sessions,
                                              run.options, run.superuser, self.runners))
