"""Runners kept between builds: a project's Alembic, loaded once per engine instead of per build.

A build starts one runner per project for its Alembic revisions (host.HostSession): Python,
SQLAlchemy, Alembic and the project's env.py imports cost ~1 s there, more than the revisions of a
small project take. Editing the last revision and running the tests again, or an instance of a
revision that is not kept, is a new build, which paid that second again. When a build ends, its
reusable runners (`HostSession.reusable`) wait here instead of being stopped, keyed as the build
keyed them (the kind, the Python, the directory, the config and the caller's environment), and
the next build of the same project takes one. They stop after `idle_seconds` unused, when more than
`most` wait, and with the engine.

What a kept runner holds is what the steps' keys say does not matter: each request re-reads the
revision files and env.py (Alembic loads them afresh for every command) and brings the build
server's connection; modules env.py imports stay loaded, as they did across one build's revisions.
Django's runner is not kept: Django imports a migration's module once and never again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

IDLE_SECONDS = 120.0
MOST = 4


class Runner(Protocol):
    @property
    def alive(self) -> bool: ...

    def close(self) -> None: ...


class IdleRunners:
    """The runners waiting for another build of their project (see the module docstring)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, most: int = MOST,
                 clock: Callable[[], float] = time.monotonic, timers: bool = True):
        self.idle_seconds = idle_seconds
        self.most = most
        self._clock = clock
        self._timers = timers  # False: the caller runs `close_expired` (tests, with their own clock)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[Runner, float]] = {}  # key -> (runner, when it was put)
        self._closed = False

    def put(self, key: str, runner: Runner) -> None:
        """Keep `runner` for the next build that asks for `key` (stopped at once when the engine
        is stopping or it is not alive)."""
        stop: list[Runner] = []
        with self._lock:
            if self._closed or not runner.alive:
                stop.append(runner)
            else:
                previous = self._waiting.pop(key, None)
                if previous is not None:
                    stop.append(previous[0])
                self._waiting[key] = (runner, self._clock())
                while len(self._waiting) > self.most:  # the oldest first (dicts keep insertion order)
                    stop.append(self._waiting.pop(next(iter(self._waiting)))[0])
        for item in stop:
            item.close()
        if self._timers and not self._closed:
            timer = threading.Timer(self.idle_seconds + 0.5, self.close_expired)
            timer.daemon = True
            timer.name = "sqlrs-idle-runners"
            timer.start()

    def take(self, key: str) -> Runner | None:
        """The runner kept for `key`, if one is alive (it is the caller's then)."""
        self.close_expired()
        with self._lock:
            found = self._waiting.pop(key, None)
        if found is None:
            return None
        if not found[0].alive:
            found[0].close()
            return None
        return found[0]

    def close_expired(self) -> None:
        now = self._clock()
        with self._lock:
            expired = [key for key, (_, since) in self._waiting.items() if now - since >= self.idle_seconds]
            stop = [self._waiting.pop(key)[0] for key in expired]
        for runner in stop:
            runner.close()

    def close(self) -> None:
        """Stop every runner; later ones are stopped as they come (the engine is stopping)."""
        with self._lock:
            self._closed = True
            stop = [runner for runner, _ in self._waiting.values()]
            self._waiting.clear()
        for runner in stop:
            runner.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
