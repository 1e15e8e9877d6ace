"""A prepare's plan: the chain's rows, base (or a `--from` state) first, each with its state id,
whether it is cached here (a kept state at or after it covers it), whether it is kept or will be
kept whatever it costs (domain/checkpoints.py), and, with a remote cache, whether the registry
has it. Prepare makes it (services/prepare.py), the builder follows it (build.py).
"""

from __future__ import annotations

from typing import Any

import attrs

from sqlrs.domain.checkpoints import CheckpointPolicy, Reason, branch_point
from sqlrs.domain.steps import Step
from sqlrs.services.states.catalog import StateCatalog

FROM_KIND = "state"  # the plan's first row with --from: the existing state the chain starts from


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
