"""The catalog of states, one owner for a state's life: which states are kept (a row and a data
directory), which a build passed without keeping them, how a finished state directory becomes a
kept state, which states are in use, and how a state goes.

Prepare, build, the remote cache, push and pull, snapshots, compare, eviction, `rm` and crash
recovery ask here. A *kept* state has a metadata row and its directory under `states/`; an
*unkept* one (domain/checkpoints.py) has only its identity, recorded with the kept state built
after it. Every state has a lock (`locks`): a job holds it while it checks or builds on the state,
and a removal takes it, so a state never goes under a job that uses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs

from sqlrs.domain.errors import Conflict, NotFound, SqlrsError
from sqlrs.domain.model import State, Task, TaskStatus, UnkeptState
from sqlrs.ports.repository import StatesAndInstances
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.faults import crash_point
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.requests import one_match

log = logging.getLogger("sqlrs.engine")

# the tasks of a running job whose states it uses: it plans on them, waits for them, builds or pulls
# them, or has them already (not one that failed, nor one it will not reach)
LIVE_TASKS = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.DONE, TaskStatus.CACHED})


class RunningJobs(Protocol):
    def running_tasks(self) -> Mapping[str, Sequence[Task]]:
        """The tasks of every job running now, by job id."""
        ...


@attrs.frozen
class Users:
    """Who uses which states right now (`StateCatalog.users`)."""

    instances: frozenset[str] = frozenset()  # states an instance was made from (not a warm one)
    jobs: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)  # state id -> the running jobs using it

    def __contains__(self, state_id: object) -> bool:
        return state_id in self.instances or state_id in self.jobs

    def ids(self) -> set[str]:
        return set(self.instances) | set(self.jobs)

    def jobs_using(self, state_ids: set[str]) -> list[str]:
        """The running jobs that use any of `state_ids`, in the order they were found."""
        found: dict[str, None] = {}
        for state_id in state_ids:
            found.update(dict.fromkeys(self.jobs.get(state_id, ())))
        return sorted(found)


class StateCatalog:
    def __init__(self, repo: StatesAndInstances, store: SnapshotStore, layout: Layout, running: RunningJobs,
                 kept_ahead: Sequence[Callable[[str], None]] = (), locks: StateLocks | None = None):
        """`kept_ahead`: what the engine keeps ready for a state (warm instances, the demand it
        remembers, its standby clone), each let go of a state that goes, in this order."""
        self.repo = repo
        self.store = store
        self.layout = layout
        self.running = running
        self.kept_ahead = tuple(kept_ahead)
        self.locks = locks or StateLocks()

    def kept(self, state_id: str) -> State | None:
        """The state when it is kept here (its row and its data directory), else None."""
        state = self.repo.get_state(state_id)
        if state is None or not self.layout.abs(state.data_path).is_dir():
            return None
        return state

    def is_kept(self, state_id: str) -> bool:
        return self.kept(state_id) is not None

    def directory(self, state_id: str) -> Path:
        """Where the kept state `state_id` lives (or will live once published)."""
        return self.layout.abs(self.layout.state_rel(state_id))

    def find(self, ref: str) -> State:
        """A state by id or unique id prefix (its row; `kept` tells whether its data is here)."""
        exact = self.repo.get_state(ref)
        if exact is not None:
            return exact
        matches = self.repo.find_states(ref)
        if not matches:
            passed = self.repo.find_unkept(ref)
            if len(passed) == 1:  # a build went through it without keeping it: say so, not "no such state"
                raise NotFound(f"state {passed[0].id[:12]} is not kept: a build passed it between two checkpoints",
                               details={"state_id": passed[0].id, "kept_id": passed[0].kept_id},
                               hint="prepare the steps up to it (a chain's last state is always kept), then use it")
        return one_match(matches, "state", ref)

    def image_of(self, state: State) -> str | None:
        """The image of an instance whose state has the same base (e.g. the snapshotted instance):
        states do not record their image, and config dbms.image may be another one."""
        bases = {known.id: known.base_id for known in self.repo.list_states()}
        for instance in self.repo.list_instances():
            if instance.image and bases.get(instance.state_id) == state.base_id:
                return instance.image
        return None

    def known_unkept(self, state_ids: Sequence[str]) -> set[str]:
        """Those of `state_ids` some build passed without keeping them."""
        return set(self.repo.unkept_states(list(state_ids))) if state_ids else set()

    def publish(self, finished: Sequence[Finished], synced: str, renamed: str | None = None) -> list[State]:
        """Make finished state directories kept states: one sync for all of them (so none is ever
        visible before it is durable), then, in order, a rename to `states/<id>` and its metadata
        row (its `size_bytes` measured here: what it adds beyond its parent) with the unkept states
        its build passed since its parent. A leftover of a crash between a rename and its row is
        replaced. `synced`, `renamed`: the fault-injection points after the sync and after each
        rename (services/faults.py). The caller removes the directories when this raises."""
        if not finished:
            return []
        self.store.sync(finished[0].directory)
        crash_point(synced)
        published = []
        for item in finished:
            state = attrs.evolve(item.state, size_bytes=self._added_bytes(item.state.parent_id, item.directory))
            target = self.layout.abs(state.data_path)
            if target.exists():
                self.store.delete(target)
            os.rename(item.directory, target)
            if renamed:
                crash_point(renamed)
            self.repo.add_state(state, item.span)
            published.append(state)
        return published

    # -- in use, and going -------------------------------------------------------------------------
    def users(self) -> Users:
        """The states in use: those an instance was made from (warm instances do not count: a state
        that goes removes them) and those a running job's live tasks name."""
        instances = frozenset(i.state_id for i in self.repo.list_instances() if not i.pooled)
        jobs: dict[str, tuple[str, ...]] = {}
        for job_id, tasks in self.running.running_tasks().items():
            for task in tasks:
                if task.state_id and task.status in LIVE_TASKS:
                    jobs[task.state_id] = (*jobs.get(task.state_id, ()), job_id)
        return Users(instances, jobs)

    def descendants(self, state: State) -> list[State]:
        """`state` and every state built on it, children before parents."""
        ordered: list[State] = []
        for child in self.repo.child_states(state.id):
            ordered.extend(self.descendants(child))
        ordered.append(state)
        return ordered

    def remove(self, state_id: str, *, wait: float = 0.0, unless_used: bool = False) -> State | None:
        """Remove the state: under its lock (waiting up to `wait` seconds for a job that checks or
        builds on it; Conflict when it still holds it), its row first (it is invisible from then
        on), then what was kept ahead for it, then its data (when that fails, the next engine start
        removes the directory). `unless_used`: not when it is in use or has child states (they
        may have come since the caller looked). The removed state; None when there was none, or it
        stayed as it is used."""
        lock = self.locks.get(state_id)
        acquired = lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)
        if not acquired:
            raise Conflict(f"state {state_id[:12]} is in use by a running job", hint="try again, or --force")
        try:
            state = self.repo.get_state(state_id)
            if state is None or (unless_used and (state_id in self.users() or self.repo.child_states(state_id))):
                return None
            self.repo.delete_state(state_id)
            for let_go in self.kept_ahead:
                try:
                    let_go(state_id)
                except Exception:  # the state goes anyway; the next engine start removes what is left
                    log.exception("cannot discard what was kept ahead for state %s", state_id[:12])
            try:
                self.store.delete(self.layout.abs(state.data_path))
            except SqlrsError as exc:
                log.warning("removed state %s but could not delete its data: %s", state_id, exc.message)
            return state
        finally:
            lock.release()

    def reconcile(self) -> None:
        """After a crash: a state directory without its row goes, a row whose directory is gone is
        forgotten (nothing half-made stays visible)."""
        known = {state.id: state for state in self.repo.list_states()}
        for directory in self.layout.states_dir.iterdir():
            if directory.name not in known:
                log.info("removing uncommitted state directory %s", directory)
                self.store.delete(directory)
        for state in known.values():
            if not self.layout.abs(state.data_path).is_dir():
                log.warning("state %s lost its data directory; forgetting it", state.id)
                self.repo.delete_state(state.id)

    def _added_bytes(self, parent_id: str | None, directory: Path) -> int:
        """Bytes the state in `directory` adds to the cache: its allocation beyond its parent's
        (extents it shares with the parent count once, as the parent's); all of it without a
        parent on disk."""
        parent = self.directory(parent_id) if parent_id else None
        if parent is None or not parent.is_dir():
            return self.store.allocated_bytes([directory])
        return max(0, self.store.allocated_bytes([parent, directory]) - self.store.allocated_bytes([parent]))


@attrs.frozen
class Finished:
    """A state directory ready to be published (in `tmp/`), its row and the span before it."""

    directory: Path
    state: State
    span: Sequence[UnkeptState] = ()
