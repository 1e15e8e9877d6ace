"""Choosing a runtime: per-request flag, environment, config, or the `auto` probe order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import attrs

from sqlrs.domain.errors import RuntimeUnavailable, UsageError
from sqlrs.ports.runtime import Probe, Runtime

PROBE_ORDER = ("docker", "podman", "native")
_PROBE_TTL = 30.0


@attrs.frozen
class Choice:
    runtime: Runtime
    reason: str  # why this one, for `status` and job events
    probes: tuple[Probe, ...]


class RuntimeRegistry:
    """Builds runtime adapters on first use and remembers probe answers for a short while."""

    def __init__(self, factories: dict[str, Callable[[], Runtime]], configured: Callable[[], tuple[str, str]]):
        self._factories = factories
        self._configured = configured  # () -> (value, where it comes from)
        self._instances: dict[str, Runtime] = {}
        self._probes: dict[str, tuple[float, Probe]] = {}
        self._lock = threading.Lock()

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in PROBE_ORDER if name in self._factories)

    def get(self, name: str) -> Runtime:
        if name not in self._factories:
            raise UsageError(f"unknown runtime {name!r}", hint="use one of: " + ", ".join(self.names()))
        with self._lock:
            if name not in self._instances:
                self._instances[name] = self._factories[name]()
            return self._instances[name]

    def probe(self, name: str, fresh: bool = False) -> Probe:
        with self._lock:
            cached = self._probes.get(name)
        if cached and not fresh and time.monotonic() - cached[0] < _PROBE_TTL:
            return cached[1]
        try:
            answer = self.get(name).probe()
        except Exception as exc:  # an adapter that cannot even be built is simply unavailable
            answer = Probe(name, False, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._probes[name] = (time.monotonic(), answer)
        return answer

    def forget_probe(self, name: str) -> None:
        """Drop a remembered answer, e.g. after the runtime failed under a job."""
        with self._lock:
            self._probes.pop(name, None)

    def probe_all(self, fresh: bool = False) -> list[Probe]:
        return [self.probe(name, fresh) for name in self.names()]

    def choose(self, requested: str | None) -> Choice:
        if requested and requested != "auto":
            wanted, origin = requested, "--runtime"
        else:
            wanted, origin = self._configured()
        if wanted and wanted != "auto":
            probe = self.probe(wanted)
            if not probe.available:  # a cached "no" may be stale: ask again before refusing
                probe = self.probe(wanted, fresh=True)
            if not probe.available:
                raise RuntimeUnavailable(
                    f"runtime {wanted} ({origin}) is not available: {probe.reason}",
                    hint="start it, or choose another with --runtime / container.runtime",
                )
            return Choice(self.get(wanted), f"{wanted}: chosen by {origin}", (probe,))
        probes: list[Probe] = []
        for name in self.names():
            probe = self.probe(name)
            probes.append(probe)
            if probe.available:
                skipped = "; ".join(f"{p.name}: {p.reason}" for p in probes[:-1])
                reason = f"{name}: first available in auto order" + (f" (skipped {skipped})" if skipped else "")
                return Choice(self.get(name), reason, tuple(probes))
        raise RuntimeUnavailable(
            "no runtime is available: " + "; ".join(f"{p.name}: {p.reason}" for p in probes),
            hint="start docker or podman, or install postgresql for the native runtime",
        )
