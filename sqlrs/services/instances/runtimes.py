"""Choosing a runtime: per-request flag, environment, config, or the `auto` probe order (the
runtimes' declared priorities, highest first: the composition root gives them in that order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import attrs

from sqlrs.domain.errors import RuntimeUnavailable, UsageError
from sqlrs.ports.runtime import Probe, Runtime

_PROBE_TTL = 30.0


# Whether a runtime whose daemon answers can serve a request: raises RuntimeUnavailable saying
# why not (e.g. its image is missing and cannot be pulled).
UsabilityCheck = Callable[[Runtime], None]


@attrs.frozen
class Choice:
    runtime: Runtime
    reason: str  # why this one, for `status` and job events
    probes: tuple[Probe, ...]
    # runtimes `auto` passed over although their daemon answers, with the reason (shown to the user)
    skipped: tuple[Probe, ...] = ()


class RuntimeRegistry:
    """Builds runtime adapters on first use and remembers probe answers for a short while."""

    def __init__(self, factories: dict[str, Callable[[], Runtime]], configured: Callable[[], tuple[str, str]]):
        """`factories`: name -> factory, in `auto` order (the first is tried first)."""
        self._factories = factories
        self._configured = configured  # () -> (value, where it comes from)
        self._instances: dict[str, Runtime] = {}
        self._probes: dict[str, tuple[float, Probe]] = {}
        self._unusable: dict[tuple[str, str], tuple[float, str]] = {}  # (runtime, what) -> (when, why)
        self._refreshing: set[str] = set()
        self._usable_at: dict[tuple[str, str], float] = {}  # (runtime, what) -> when a check said yes
        self._lock = threading.Lock()

    def names(self) -> tuple[str, ...]:
        """Every runtime's name, in `auto` order."""
        return tuple(self._factories)

    def check_name(self, name: str | None) -> None:
        """Refuse a requested runtime name (None and `auto` are fine) no runtime has."""
        if name not in (None, "auto") and name not in self._factories:
            raise UsageError(f"unknown runtime {name!r}", hint="use one of: " + ", ".join(("auto", *self.names())))

    def get(self, name: str) -> Runtime:
        self.check_name(name)
        with self._lock:
            if name not in self._instances:
                self._instances[name] = self._factories[name]()
            return self._instances[name]

    def probe(self, name: str, fresh: bool = False, wait: bool = True) -> Probe:
        """The runtime's answer, asked again after _PROBE_TTL. With `wait=False` (`status`) a stale
        answer is returned at once and refreshed in the background: a docker or podman probe is a
        daemon round trip (5-50 ms) that `sqlrs status` in a loop would otherwise pay every TTL."""
        with self._lock:
            cached = self._probes.get(name)
        if cached and not fresh and time.monotonic() - cached[0] < _PROBE_TTL:
            return cached[1]
        if cached and not fresh and not wait:
            self._refresh_in_background(name)
            return cached[1]
        try:
            answer = self.get(name).probe()
        except Exception as exc:  # an adapter that cannot even be built is simply unavailable
            answer = Probe(name, False, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._probes[name] = (time.monotonic(), answer)
        return answer

    def _refresh_in_background(self, name: str) -> None:
        with self._lock:
            if name in self._refreshing:
                return
            self._refreshing.add(name)

        def refresh() -> None:
            try:
                self.probe(name, fresh=True)
            finally:
                with self._lock:
                    self._refreshing.discard(name)

        threading.Thread(target=refresh, name=f"sqlrs-probe-{name}", daemon=True).start()

    def forget_probe(self, name: str) -> None:
        """Drop a remembered answer, e.g. after the runtime failed under a job."""
        with self._lock:
            self._probes.pop(name, None)
            for key in [key for key in self._unusable if key[0] == name]:
                del self._unusable[key]
            for key in [key for key in self._usable_at if key[0] == name]:
                del self._usable_at[key]

    def unusable(self, name: str, what: str, check: UsabilityCheck, wait: bool = True) -> str | None:
        """Why runtime `name` cannot serve `what` (e.g. an image), asking `check` at most every
        _PROBE_TTL seconds for a "no"; None when it can. A "yes" is not remembered for requests:
        the check (an image lookup) is cheap when the answer is yes, and an image may vanish; only
        `wait=False` (`status`, which must not pay a daemon round trip each time) trusts a recent
        one."""
        key = (name, what)
        with self._lock:
            cached = self._unusable.get(key)
            said_yes = self._usable_at.get(key)
        if cached and time.monotonic() - cached[0] < _PROBE_TTL:
            return cached[1]
        if not wait and said_yes is not None and time.monotonic() - said_yes < _PROBE_TTL:
            return None
        try:
            check(self.get(name))
        except RuntimeUnavailable as exc:
            with self._lock:
                self._unusable[key] = (time.monotonic(), exc.message)
                self._usable_at.pop(key, None)
            return exc.message
        with self._lock:
            self._unusable.pop(key, None)
            self._usable_at[key] = time.monotonic()
        return None

    def rebuild(self, name: str) -> Probe:
        """Build the adapter anew (its settings changed) and probe it; the old one is dropped only
        when the new one answers, so a bad setting leaves the working adapter in place."""
        self.check_name(name)
        try:
            fresh = self._factories[name]()
            answer = fresh.probe()
        except Exception as exc:
            return Probe(name, False, f"{type(exc).__name__}: {exc}")
        if answer.available:
            with self._lock:
                self._instances[name] = fresh
                self._probes[name] = (time.monotonic(), answer)
                for key in [key for key in self._unusable if key[0] == name]:
                    del self._unusable[key]
                for key in [key for key in self._usable_at if key[0] == name]:
                    del self._usable_at[key]
        return answer

    def validate(self, usable: tuple[str, UsabilityCheck] | None = None) -> list[Probe]:
        """Ask every runtime afresh (and whether it can serve `usable`): what `auto` would see."""
        answers = []
        for name in self.names():
            probe = self.probe(name, fresh=True)
            if probe.available and usable is not None:
                with self._lock:
                    self._unusable.pop((name, usable[0]), None)
                problem = self.unusable(name, usable[0], usable[1])
                if problem is not None:
                    probe = Probe(name, False, f"daemon answers, but {problem}")
            answers.append(probe)
        return answers

    def probe_all(self, fresh: bool = False, wait: bool = True) -> list[Probe]:
        return [self.probe(name, fresh, wait) for name in self.names()]

    def choose(self, requested: str | None, usable: tuple[str, UsabilityCheck] | None = None,
               wait: bool = True) -> Choice:
        """The runtime for a request: `requested`, else the configured one, else the first in
        `auto` order whose daemon answers and which passes `usable` (what, check) — e.g. can get
        the image. An explicitly chosen runtime is not checked here: using it reports why it
        cannot serve the request, with a hint."""
        if requested and requested != "auto":
            wanted, origin = requested, "--runtime"
        else:
            wanted, origin = self._configured()
        if wanted and wanted != "auto":
            probe = self.probe(wanted, wait=wait)
            if not probe.available and wait:  # a cached "no" may be stale: ask again before refusing
                probe = self.probe(wanted, fresh=True)
            if not probe.available:
                raise RuntimeUnavailable(
                    f"runtime {wanted} ({origin}) is not available: {probe.reason}",
                    hint="start it, or choose another with --runtime / container.runtime",
                )
            return Choice(self.get(wanted), f"{wanted}: chosen by {origin}", (probe,))
        if not self._factories:
            raise RuntimeUnavailable("no runtime is registered (entry point group sqlrs.runtimes)",
                                     hint="install sqlrs again: its own runtimes are entry points (in a checkout: "
                                          "pip install -e .)")
        probes: list[Probe] = []
        passed_over: list[Probe] = []
        for name in self.names():
            probe = self.probe(name, wait=wait)
            if probe.available and usable is not None:
                problem = self.unusable(name, usable[0], usable[1], wait)
                if problem is not None:
                    probe = Probe(name, False, problem)
                    passed_over.append(probe)
            probes.append(probe)
            if probe.available:
                skipped = "; ".join(f"{p.name}: {p.reason}" for p in probes[:-1])
                reason = f"{name}: first available in auto order" + (f" (skipped {skipped})" if skipped else "")
                return Choice(self.get(name), reason, tuple(probes), tuple(passed_over))
        raise RuntimeUnavailable(
            "no runtime is available: " + "; ".join(f"{p.name}: {p.reason}" for p in probes),
            hint="start one of them, or install postgresql for the native runtime",
        )
