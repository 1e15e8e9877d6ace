"""Keeping states as a build goes: after a step the checkpoint policy (domain/checkpoints.py)
decides, and a kept state is put aside in `tmp/` — mid-chain a store clone of the running build
server's data directory right after `CHECKPOINT` (PostgreSQL recovers such a clone like a crash,
from that checkpoint: nothing to redo), the last step the scratch directory itself after a clean
shutdown — and published in batches (StateCatalog.publish: one sync, renames, metadata rows).
What keeping costs on this store is measured here, so the policy can weigh it against a replay.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

import attrs

from sqlrs.domain import keys, roles
from sqlrs.domain.errors import NoSpace
from sqlrs.domain.model import State, UnkeptState
from sqlrs.domain.steps import PsqlOptions
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.ports.snapshots import EarlierClone
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.servers import Server
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.cache import CacheService
from sqlrs.services.states.catalog import Finished, StateCatalog
from sqlrs.services.states.plan import PlanItem
from sqlrs.services.states.steps import state_kind
from sqlrs.services.states.steps.base import ToolSession


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


class StateKeeper:
    """Puts a build's states aside and publishes them; see the module docstring."""

    def __init__(self, catalog: StateCatalog, servers: ServerInstances, cache: CacheService):
        self.catalog = catalog
        self.store = catalog.store
        self.layout = catalog.layout
        self.admin = servers.admin
        self.clock = servers.clock
        self.cache = cache  # makes room when a clone runs out of space
        self.costs = CheckpointCosts()

    def clone(self, run: BuildRun, source: Path, target: Path, earlier: EarlierClone | None = None) -> None:
        """A store clone; when the store's filesystem is full, the cache makes room and it is tried again."""
        try:
            self.store.clone(source, target, earlier)
        except NoSpace:
            try:
                self.cache.make_room(run.ctx, self.store.allocated_bytes([source]))
            except NoSpace:
                pass  # nothing to evict: the clone's own error says it better
            else:
                self.store.clone(source, target, earlier)
                return
            raise

    def keep(self, run: BuildRun, item: PlanItem, final: bool) -> None:
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
                self.clone(run, source, temporary, run.earlier)
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
            step_hash=None if item.step is None else _step_hash(item, run),
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
        self.clone(run, source, target, run.earlier)
        if control is None or _read_control(source) != control:
            self.store.delete(target)
            server.stop()
            self.clone(run, source, target, run.earlier)
            server.start()
        with contextlib.suppress(FileNotFoundError):
            (target / "postmaster.pid").unlink()

    def publish(self, run: BuildRun) -> None:
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
        parent = self.catalog.repo.get_state(run.last_kept) if run.last_kept else None
        return parent.base_id if parent is not None else item.state_id

    def span_entry(self, run: BuildRun, item: PlanItem, seconds: float) -> UnkeptState:
        """The record of a state the build passed without keeping it (kept with the next kept one)."""
        return UnkeptState(id=item.state_id, parent_id=item.parent_id or "", step_hash=_step_hash(item, run),
                           kind=state_kind(item.step), source=item.source, build_seconds=round(seconds, 3),
                           kept_id="", position=len(run.span), created_at=self.clock.now())


def _step_hash(item: PlanItem, run: BuildRun) -> str:
    assert item.step is not None
    return keys.step_hash(item.step, run.options)


def _read_control(data_dir: Path) -> bytes | None:
    """The cluster's pg_control, or None when the engine cannot read it."""
    try:
        return (data_dir / "global" / "pg_control").read_bytes()
    except OSError:
        return None


