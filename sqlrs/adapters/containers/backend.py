"""What differs between docker and podman: the `ContainerBackend` protocol and its data.

`ContainerRuntime` (runtime.py) implements the `Runtime` port once, for every container engine,
on top of one backend; `DockerBackend` (docker.py) and `PodmanBackend` (podman.py) implement
this protocol with their SDK. SDK objects and SDK errors never leave a backend's module except
as plain exceptions the runtime turns into `RuntimeFailure`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs

from sqlrs.adapters.containers.images import ImageInfo
from sqlrs.domain.errors import RuntimeFailure

# (stdout, stderr) chunks of an exec, as they come; one of the two is None or empty.
Frames = Iterator[tuple[bytes | None, bytes | None]]


@attrs.frozen
class Mount:
    source: str
    target: str
    read_only: bool = False


@attrs.frozen
class ContainerConfig:
    """A runtime-neutral container definition; the backends translate it for their SDK."""

    image: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    user: str
    labels: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    name: str | None = None
    ports: Mapping[int, tuple[str, int]] = attrs.field(factory=dict)  # tcp port -> (host ip, port)
    environment: Mapping[str, str] = attrs.field(factory=dict)
    shm_size: str | None = None
    stop_signal: str | None = None
    network: bool = True  # False: no network at all (one-shot containers)

    def create_kwargs(self) -> dict[str, Any]:
        """The keyword arguments both SDKs' `containers.create` spell alike (not image, mounts,
        stop signal: those differ and each backend adds them)."""
        kwargs: dict[str, Any] = {
            "entrypoint": list(self.entrypoint),
            "command": list(self.command) or None,
            "user": self.user,
            "labels": dict(self.labels),
        }
        if self.name:
            kwargs["name"] = self.name
        if self.ports:
            kwargs["ports"] = {f"{port}/tcp": host for port, host in self.ports.items()}
        if self.environment:
            kwargs["environment"] = dict(self.environment)
        if self.shm_size:
            kwargs["shm_size"] = self.shm_size
        if not self.network:
            kwargs["network_mode"] = "none"
        return kwargs


@attrs.frozen
class ContainerState:
    running: bool
    status: str  # "running", "exited", "created", ...
    exit_code: int | None


class ContainerBackend(Protocol):
    """One container engine's API, reduced to what sqlrs needs. Methods raise whatever their SDK
    raises when the daemon fails; "not found" answers are values (None, no-ops), not errors."""

    name: str  # "docker" | "podman": the runtime's name
    cli: str  # the command line tool of this engine, for hints

    @property
    def endpoint(self) -> str:
        """The daemon/service address, for messages."""
        ...

    def ping(self, timeout: float) -> str:
        """Ask the daemon, within `timeout`; return its version. Raise when it does not answer."""
        ...

    def image(self, reference: str) -> ImageInfo | None:
        """The local image `reference` (name, name@digest or id), None when absent."""
        ...

    def pull(self, reference: str) -> None:
        """Pull the image; raise with the daemon's own words when it cannot."""
        ...

    def create(self, config: ContainerConfig) -> str:
        """Create (not start) a container; return its id."""
        ...

    def start(self, container: str) -> None: ...

    def state(self, container: str) -> ContainerState | None:
        """None when the container does not exist."""
        ...

    def kill(self, container: str, signal: str) -> None:
        """Send a signal ("SIGINT", ...); a missing or stopped container is fine."""
        ...

    def logs(self, container: str) -> tuple[bytes, bytes]:
        """All (stdout, stderr) the container wrote."""
        ...

    def remove(self, container: str) -> None:
        """Remove with force (and anonymous volumes), without a graceful stop; a missing
        container is fine."""
        ...

    def find(self, labels: Mapping[str, str | None], running_only: bool = False) -> list[str]:
        """Ids of containers carrying all `labels` (a None value: the label with any value)."""
        ...

    def exec(
        self, container: str, cmd: Sequence[str], user: str, env: Mapping[str, str], workdir: str | None
    ) -> tuple[str, Frames]:
        """Start an exec; return its id and an iterator of (stdout, stderr) chunks until it ends."""
        ...

    def exec_result(self, exec_id: str) -> tuple[bool, int | None]:
        """(still running, exit code) of an exec."""
        ...

    def close(self) -> None:
        """Release the SDK client (a new one is made on next use)."""
        ...


def failure(backend: ContainerBackend, what: str, exc: BaseException) -> RuntimeFailure:
    """A backend error as the one-line `RuntimeFailure` users see."""
    text = str(exc).strip() or type(exc).__name__
    return RuntimeFailure(f"{backend.name}: {what}: {text}")


# A kill or forced removal can race the container's own exit; podman then answers 500 ("read
# /proc/N/cgroup: no such process") instead of "not running". How long the container may take to
# show that it exited before the failure counts.
EXIT_RACE_SECONDS = 5.0


def wait_exit(backend: ContainerBackend, container: str, timeout: float) -> ContainerState | None:
    """Wait until the container is not running; its final state, None on timeout.

    A container that does not exist (any more) counts as exited with no exit code.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        state = backend.state(container)
        if state is None or not state.running:
            return state or ContainerState(False, "missing", None)
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def one_shot(backend: ContainerBackend, config: ContainerConfig, timeout: float) -> tuple[int, str, str]:
    """Run a throwaway container to its end: (exit code, stdout, stderr). Always removed."""
    container = backend.create(config)
    try:
        backend.start(container)
        state = wait_exit(backend, container, timeout)
        if state is None:
            raise RuntimeFailure(
                f"{backend.name}: {' '.join(config.entrypoint)} did not finish within {timeout:.0f}s"
            )
        out, err = backend.logs(container)
        code = state.exit_code if state.exit_code is not None else -1
        return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    finally:
        with contextlib.suppress(Exception):
            backend.remove(container)
