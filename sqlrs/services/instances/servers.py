"""Starting and stopping one PostgreSQL server through a runtime, with port allocation."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

from sqlrs.domain.errors import RuntimeFailure
from sqlrs.ports.postmaster import tail, wait_ready
from sqlrs.ports.runtime import InstanceSpec, Runtime, RuntimeIdentity

# Disposable servers: durability against machine crashes comes from a clean shutdown and a sync
# before a state is committed, never from fsync inside the server, so builds and instances skip
# it. Commits still reach the kernel before they return (synchronous_commit stays on), so a
# killed server loses nothing a client saw committed.
SERVER_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "min_wal_size": "32MB",
    "max_wal_size": "2GB",
    # copy-on-write stores: WAL segments are neither zero-filled nor recycled (PostgreSQL's advice
    # for CoW filesystems), so a state carries one sparse segment instead of several full ones
    "wal_init_zero": "off",
    "wal_recycle": "off",
}

START_TIMEOUT = 120.0


class PortAllocator:
    """Hands out free TCP ports on 127.0.0.1, never the same one twice at a time."""

    def __init__(self, in_use: Callable[[], Iterable[int]]):
        self._in_use = in_use
        self._reserved: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self, preferred: int | None = None) -> int:
        """A free port; `preferred` (the caller's own port, e.g. a restarted instance's) if it is free."""
        with self._lock:
            if preferred and preferred not in self._reserved and _bindable(preferred):
                self._reserved.add(preferred)
                return preferred
            taken = set(self._in_use()) | self._reserved
            for _ in range(50):
                port = _free_port()
                if port not in taken and _bindable(port):
                    self._reserved.add(port)
                    return port
        raise RuntimeFailure("no free TCP port on 127.0.0.1")

    def release(self, port: int) -> None:
        with self._lock:
            self._reserved.discard(port)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@attrs.define
class Server:
    """A server of one data directory, run by one runtime."""

    runtime: Runtime
    spec: InstanceSpec
    ref: str = ""

    @classmethod
    def create(
        cls,
        runtime: Runtime,
        identity: RuntimeIdentity,
        key: str,
        data_dir: Path,
        run_dir: Path,
        port: int,
        ref: str = "",
        settings: Mapping[str, str] | None = None,
    ) -> Server:
        spec = InstanceSpec(
            instance_id=key, data_dir=data_dir, run_dir=run_dir, port=port, identity=identity,
            settings={**SERVER_SETTINGS, **(settings or {})},
        )
        return cls(runtime, spec, ref)

    def log_tail(self) -> str:
        return tail(self.spec.run_dir / "postgres.log")

    def running(self) -> bool:
        return bool(self.ref) and self.runtime.is_running(self.spec, self.ref)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.runtime.prepare_run_dir(self.spec.identity, self.spec.run_dir)
        launched_at = time.time()
        self.ref = self.runtime.start(self.spec)
        try:
            wait_ready(self.spec.data_dir, self.running, timeout, self.log_tail, launched_at=launched_at)
        except RuntimeFailure:
            self.discard()
            raise

    def stop(self) -> None:
        """Fast shutdown; the data directory is clean afterwards or this raises."""
        if self.ref:
            self.runtime.stop(self.spec, self.ref)
        if (self.spec.data_dir / "postmaster.pid").exists():
            raise RuntimeFailure(
                "PostgreSQL did not shut down cleanly", details={"log": self.log_tail()}
            )

    def discard(self) -> None:
        """Stop whatever runs and release it; never raises for things already gone."""
        if self.ref:
            with contextlib.suppress(Exception):
                self.runtime.stop(self.spec, self.ref, timeout=15.0)
            self.runtime.discard(self.spec, self.ref)
