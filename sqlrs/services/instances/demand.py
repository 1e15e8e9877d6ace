"""Demand, shared by what the engine keeps started ahead: the warm instances (services/instances/pool.py) and
the shared servers with their copies made ahead (services/instances/databases.py). The policy is
`sqlrs.domain.demand`; this service locks it, feeds it claims and sessions, knows each state's
shape (for supersession) and wakes the keepers when a session ends, so that what the session's
states held falls back to the idle level within seconds, not after a window of minutes.

Sessions: `PUT /v1/sessions/{id}` (the pytest plugin, once per process and state; the library's
`Client.begin_session`) says a run of claims on a state begins; `DELETE /v1/sessions/{id}` that it
ended. A session may belong to a process (pid + start time): once that process is gone, the
lifetime service ends the session (`services/instances/lifetime.py`, like a pool hold).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlrs.domain.demand import Demand, IdlePolicy, Level, Need
from sqlrs.domain.errors import UsageError
from sqlrs.ports.clock import Clock
from sqlrs.ports.repository import StateRepository

log = logging.getLogger("sqlrs.demand")

MAX_SESSION_CHARS = 200
POLICY_TTL = 1.0  # seconds the policy (configuration) is cached: a claim asks for it


class DemandService:
    def __init__(self, repo: StateRepository, clock: Clock, policy: Callable[[], IdlePolicy] = IdlePolicy):
        self.repo = repo
        self.clock = clock
        self._read_policy = policy
        self._policy: tuple[float, IdlePolicy] | None = None
        self._demand = Demand()
        self._lock = threading.Lock()
        self._shapes: dict[str, str | None] = {}  # states never change: their shape is computed once
        self.on_change: list[Callable[[], None]] = []  # the keepers' wake-ups, called without the lock

    def policy(self) -> IdlePolicy:
        now = self.clock.monotonic()
        cached = self._policy
        if cached is None or now - cached[0] >= POLICY_TTL:
            cached = self._policy = (now, self._read_policy())
        return cached[1]

    def shape(self, state_id: str) -> str | None:
        """The chain of step sources from the base to the state (None when a state is missing)."""
        if state_id in self._shapes:
            return self._shapes[state_id]
        sources: list[str] = []
        current: str | None = state_id
        while current is not None:
            state = self.repo.get_state(current)
            if state is None:
                return None
            sources.append(f"{state.kind.value}:{state.source}")
            current = state.parent_id
        shape = "\n".join(reversed(sources))
        self._shapes[state_id] = shape
        return shape

    def claimed(self, state_id: str) -> None:
        """An instance of the state is being handed out."""
        shape, policy = self.shape(state_id), self.policy()
        with self._lock:
            self._demand.claim(state_id, shape, self.clock.monotonic(), policy)

    def need(self, state_id: str) -> Need:
        policy = self.policy()
        with self._lock:
            return self._demand.need(state_id, self.clock.monotonic(), policy)

    def levels(self) -> dict[str, Level]:
        policy = self.policy()
        with self._lock:
            return self._demand.levels(self.clock.monotonic(), policy)

    def begin(self, session: str, state_id: str) -> dict[str, Any]:
        if not 0 < len(session) <= MAX_SESSION_CHARS or "/" in session:
            raise UsageError(f"a session id takes 1 to {MAX_SESSION_CHARS} characters, no /")
        shape, policy = self.shape(state_id), self.policy()
        with self._lock:
            need = self._demand.begin(session, state_id, shape, self.clock.monotonic(), policy)
        log.info("session %s began on state %s (its previous run claimed %d)", session, state_id[:12], need.expected)
        self._changed()
        return {"session": session, "state_id": state_id, "expected": need.expected}

    def end(self, session: str, state_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            held = self._demand.end(session, self.clock.monotonic(), state_id)
        if held:
            log.info("session %s ended (states %s)", session, ", ".join(s[:12] for s in held))
        self._changed()
        return {"session": session, "ended": bool(held), "state_ids": held}

    def sessions(self) -> dict[str, list[str]]:
        """Open sessions and the states each holds."""
        with self._lock:
            return self._demand.sessions()

    def forget(self, state_id: str) -> None:
        """The state is gone: its use with it."""
        with self._lock:
            self._demand.forget(state_id)
        self._shapes.pop(state_id, None)

    def status(self) -> dict[str, Any]:
        """For `sqlrs status`: open sessions, and the states by level."""
        policy = self.policy()
        with self._lock:
            levels = self._demand.levels(self.clock.monotonic(), policy)
            sessions = self._demand.sessions()
        return {"sessions": len(sessions), "idle_states": policy.states,
                "busy": sorted(s for s, level in levels.items() if level is Level.BUSY),
                "idle": sorted(s for s, level in levels.items() if level is Level.IDLE)}

    def _changed(self) -> None:
        for wake in self.on_change:
            wake()
