"""The stop protocol of the container runtimes, against a scripted backend (no daemon)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from sqlrs.adapters.containers.backend import ContainerBackend, ContainerState
from sqlrs.adapters.containers.runtime import ContainerRuntime
from sqlrs.domain.errors import RuntimeFailure
from sqlrs.ports.runtime import InstanceSpec

RUNNING = ContainerState(True, "running", None)
EXITED = ContainerState(False, "exited", 0)


class ScriptedBackend:
    """A container whose process exits while the kill is on its way, as podman shows it."""

    name = "podman"
    endpoint = "unix:///run/podman/podman.sock"
    cli = "podman"

    def __init__(self, exits_during_kill: bool) -> None:
        self.exits_during_kill = exits_during_kill
        self.current = RUNNING
        self.kills: list[str] = []

    def state(self, container: str) -> ContainerState | None:
        return self.current

    def kill(self, container: str, signal: str) -> None:
        self.kills.append(signal)
        if self.exits_during_kill:
            self.current = EXITED
        raise RuntimeError("500 Server Error: Internal Server Error (read /proc/12986/cgroup: no such process)")

    def close(self) -> None:
        pass


def runtime(backend: ScriptedBackend) -> ContainerRuntime:
    return ContainerRuntime(cast(ContainerBackend, backend))


SPEC = cast(InstanceSpec, cast(Any, None))  # stop() does not read the spec


def test_a_kill_that_fails_because_the_container_just_exited_is_a_stop() -> None:
    backend = ScriptedBackend(exits_during_kill=True)
    runtime(backend).stop(SPEC, "63eb3290f82c")
    assert backend.kills == ["SIGINT"]


def test_a_kill_that_fails_on_a_running_container_is_a_runtime_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sqlrs.adapters.containers.backend.EXIT_RACE_SECONDS", 0.05)
    backend = ScriptedBackend(exits_during_kill=False)
    with pytest.raises(RuntimeFailure, match="cannot stop container 63eb3290f82c"):
        runtime(backend).stop(SPEC, "63eb3290f82c")


class RemovalRace(ScriptedBackend):
    """The forced removal fails once while the process exits, then goes through."""

    def __init__(self) -> None:
        super().__init__(exits_during_kill=True)
        self.removals = 0

    def remove(self, container: str) -> None:
        self.removals += 1
        if self.removals == 1:
            self.current = EXITED
            raise RuntimeError("500 Server Error: Internal Server Error (no such process)")


def test_a_removal_that_races_the_exit_is_tried_once_more() -> None:
    backend = RemovalRace()
    runtime(backend).discard(SPEC, "63eb3290f82c")
    assert backend.removals == 2
