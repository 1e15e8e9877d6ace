"""Which steps of a chain are kept as states (checkpoints) when it is built. Pure: no I/O, no clock.

Every step of a chain has a state id (`keys.chain`), kept or not; only *kept* states have a data
directory. Keeping one costs time (a clone of the running scratch cluster, and its share of the
sync at the end of the build) and, on a store without copy-on-write, a whole copy of the data
directory on disk. Not keeping one costs a replay: a later build that needs it starts from the
nearest kept state before it and applies the steps since.

A step is kept when

- it is the chain's last step (what an instance is made of), or the one before it (editing the
  last migration, the most common edit, then rebuilds one step), or
- it is a *branch point*: a state another chain already passed through (known, not kept) after
  which this chain goes another way, so that two chains share it from now on, or
- the replay it would save pays for it: the steps since the previous kept state took at least
  `payback` times what keeping one costs on this store (measured while building). Over a whole
  build, checkpoints then cost at most about 1/payback of the replay time.

Decisions never change state ids: a kept state and an unkept one of the same step have the same id.
"""

from __future__ import annotations

import attrs

# Keep a step when the replay since the last kept state is at least this many times what keeping
# one costs: checkpoints then take at most ~1/PAYBACK of a cold build's time, and editing a step
# replays at most PAYBACK checkpoint costs before it.
PAYBACK = 4.0


class Reason:
    """Why a step is (to be) kept; shown by `plan:*` and recorded in the build's events."""

    LAST = "last step"
    BEFORE_LAST = "before the last step"
    BRANCH = "branch point"
    PAYS = "replay cost"
    START = "start"


@attrs.frozen
class CheckpointPolicy:
    """Decides, step by step while a chain is built, which states to keep."""

    payback: float = PAYBACK

    def forced(self, index: int, last_index: int, branch_point: bool) -> str | None:
        """The reason a step is kept whatever it costs, or None (`index` counts from the base = 0)."""
        if index == last_index:
            return Reason.LAST
        if index == last_index - 1:
            return Reason.BEFORE_LAST
        if branch_point:
            return Reason.BRANCH
        return None

    def pays(self, replay_seconds: float, keep_seconds: float) -> bool:
        """Does keeping this step pay: `replay_seconds` since the last kept state (this step
        included) against `keep_seconds`, what a checkpoint costs on this store now."""
        return replay_seconds >= self.payback * max(keep_seconds, 0.0)


def branch_point(known: list[bool], kept: list[bool]) -> int | None:
    """The index of the chain's branch point: its deepest *known* state (built before by another
    chain, not kept) when the chain goes on past it and nothing deeper is kept; else None.

    `known[i]`: state i was passed by an earlier build; `kept[i]`: state i has a data directory."""
    deepest_kept = max((i for i, k in enumerate(kept) if k), default=-1)
    for index in range(len(known) - 1, deepest_kept, -1):
        if known[index] and not kept[index]:
            return index if index < len(known) - 1 else None
    return None
