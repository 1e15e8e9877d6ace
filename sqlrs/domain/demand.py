"""Demand for what the engine keeps started ahead (warm instances, shared servers, database copies
made ahead), and how little it keeps when nobody is testing. Pure: times are monotonic seconds
passed in by the caller.

Each state that was claimed (an instance of it handed out) has a `Use`. A state is

- `BUSY` while a *session* holds it (a test session that announced itself: the pytest plugin, a
  library user; one that neither claims nor begins again for `seconds` has lapsed: a client that
  never ends its session does not keep spares forever) or a claim, or a session's end, came in the
  last `quiet_seconds`: the keepers
  follow demand (claims in their windows, and the size of the state's previous burst while a
  session holds it, so a suite's next run finds its spares made as soon as it starts);
- `IDLE` when it is not busy but among the `states` most recently used ones, used within
  `seconds`, and not superseded: the keepers keep a small idle level (one warm instance, or a
  shared server with its floor of copies);
- `NONE` otherwise: nothing is kept for it (its warm instances and copies go, its shared server
  stops once it holds no database instance).

A state is *superseded* when a more recently used state has the same *shape*: the same chain of
step sources from the base (`initdb`, then `0001 alembic/versions/0001_x.py`, ... or the psql
files), so a state built from an edited migration or SQL file replaces its older version.
Supersession only takes what is kept for an idle state; a busy state keeps its demand.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs

# A burst of claims (or a session that ended) is over after this long without a claim: longer than
# a test runner takes to start again, so runs back to back keep their spares (pytest -n 2 on 2 busy
# cores, load 20: 14-17 s from one run's session end to the next one's begin; ~3 s when quiet)
QUIET_SECONDS = 20.0
MAX_USES = 256  # states remembered (the least recently used are forgotten first)


def recent(claims: deque[float], now: float, window: float) -> int:
    """Forget the claim times (oldest first) older than `window` seconds before `now`; how many remain."""
    while claims and claims[0] < now - window:
        claims.popleft()
    return len(claims)


class Level(enum.Enum):
    BUSY = "busy"
    IDLE = "idle"
    NONE = "none"


@attrs.frozen
class Need:
    """What a keeper should hold for one state: its level and, while a session holds it, the claims
    of the state's previous burst (0 otherwise)."""

    level: Level
    expected: int = 0


BUSY = Need(Level.BUSY)  # a state a keeper knows nothing about: it follows its own demand


@attrs.frozen
class IdlePolicy:
    """How much stays when nobody is testing (config `warm.idle_states`, `warm.idle_seconds`)."""

    states: int = 2
    seconds: float = 300.0
    quiet_seconds: float = QUIET_SECONDS


@attrs.define
class Use:
    state_id: str
    shape: str | None  # None: not known, never superseded
    last_used: float
    sessions: set[str] = attrs.field(factory=set)
    claims: int = 0  # claims of the current burst
    last_burst: int = 0  # claims of the previous burst

    def busy(self, now: float, policy: IdlePolicy) -> bool:
        idle_for = now - self.last_used
        return (bool(self.sessions) and idle_for <= policy.seconds) or idle_for < policy.quiet_seconds


class Demand:
    """The uses of the states, and the level each gets. Not thread-safe (services/instances/demand.py locks)."""

    def __init__(self) -> None:
        self.uses: dict[str, Use] = {}

    def _use(self, state_id: str, shape: str | None, now: float, policy: IdlePolicy) -> Use:
        use = self.uses.get(state_id)
        if use is None:
            use = self.uses[state_id] = Use(state_id, shape, now)
            if len(self.uses) > MAX_USES:
                oldest = min((u for u in self.uses.values() if not u.sessions), key=lambda u: u.last_used,
                             default=None)
                if oldest is not None:
                    del self.uses[oldest.state_id]
        elif not use.busy(now, policy) and use.claims:
            use.last_burst, use.claims = use.claims, 0  # a new burst begins
        return use

    def claim(self, state_id: str, shape: str | None, now: float, policy: IdlePolicy) -> None:
        """An instance of the state was handed out."""
        use = self._use(state_id, shape, now, policy)
        use.claims += 1
        use.last_used = now

    def begin(self, session: str, state_id: str, shape: str | None, now: float, policy: IdlePolicy) -> Need:
        """`session` holds the state until `end`: it is busy, and expects its previous burst again."""
        use = self._use(state_id, shape, now, policy)
        use.sessions.add(session)
        use.last_used = now
        return self.need(state_id, now, policy)

    def end(self, session: str, now: float, state_id: str | None = None) -> list[str]:
        """The session no longer holds the state (any state when None); the states it held."""
        held = []
        for use in self.uses.values():
            if session in use.sessions and state_id in (None, use.state_id):
                use.sessions.discard(session)
                use.last_used = now
                held.append(use.state_id)
        return held

    def forget(self, state_id: str) -> None:
        """The state is gone (removed or evicted)."""
        self.uses.pop(state_id, None)

    def levels(self, now: float, policy: IdlePolicy) -> dict[str, Level]:
        """Every known state's level (see the module docstring)."""
        result: dict[str, Level] = {}
        shapes: set[str] = set()
        kept = 0
        for use in sorted(self.uses.values(), key=lambda u: u.last_used, reverse=True):
            superseded = use.shape is not None and use.shape in shapes
            if use.shape is not None:
                shapes.add(use.shape)
            if use.busy(now, policy):
                result[use.state_id] = Level.BUSY
            elif not superseded and kept < policy.states and now - use.last_used <= policy.seconds:
                result[use.state_id] = Level.IDLE
                kept += 1
            else:
                result[use.state_id] = Level.NONE
        return result

    def need(self, state_id: str, now: float, policy: IdlePolicy) -> Need:
        """The state's level, and what its sessions expect; a state never claimed is NONE."""
        use = self.uses.get(state_id)
        if use is None:
            return Need(Level.NONE)
        level = self.levels(now, policy)[state_id]
        expected = max(use.claims, use.last_burst) if use.sessions else 0
        return Need(level, expected)

    def sessions(self) -> dict[str, list[str]]:
        """Open sessions and the states each holds."""
        held: dict[str, list[str]] = {}
        for use in self.uses.values():
            for session in use.sessions:
                held.setdefault(session, []).append(use.state_id)
        return held
