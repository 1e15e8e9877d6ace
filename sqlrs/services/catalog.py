"""The catalog of states: which are kept (a row and a data directory), which a build passed
without keeping them, and how a finished state directory becomes a kept state.

One owner for "is this state cached": prepare, build, the remote cache, push and pull ask here.
A *kept* state has a metadata row and its directory under `states/`; an *unkept* one
(domain/checkpoints.py) has only its identity, recorded with the kept state built after it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from sqlrs.domain.model import State, UnkeptState
from sqlrs.ports.repository import Repository
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.faults import crash_point
from sqlrs.services.layout import Layout


class StateCatalog:
    def __init__(self, repo: Repository, store: SnapshotStore, layout: Layout):
        self.repo = repo
        self.store = store
        self.layout = layout

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
