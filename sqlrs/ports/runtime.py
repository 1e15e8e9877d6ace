"""The `Runtime` port: how sqlrs runs PostgreSQL servers.

A runtime turns a data directory on the host into a running server on 127.0.0.1 and runs
PostgreSQL client tools (psql, pgbench) against it. Adapters: native binaries, docker, podman.
Data directories always live on the host (in the snapshot store), whatever the runtime, so
states and instances are the same store objects for every runtime.

Conventions every adapter follows:
- The server listens on TCP 127.0.0.1:`spec.port` (containers: published on 127.0.0.1 only) and
  on a Unix socket named `.s.PGSQL.<spec.port>` in `spec.run_dir` on the host, so the engine
  can reach it without a password (`local all all trust` in pg_hba.conf) whatever the runtime.
- The cluster's bootstrap superuser is `postgres`; TCP clients need scram-sha-256.
- Readiness, clean shutdown and the server's pid are read from `postmaster.pid` in the data dir.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

import attrs

OutputSink = Callable[[Literal["stdout", "stderr"], bytes], None]


@attrs.frozen
class Probe:
    """Whether a runtime can be used here, and why (not)."""

    name: str
    available: bool
    reason: str


@attrs.frozen
class RuntimeIdentity:
    """What a runtime will run: enters the base state's id (sqlrs.domain.keys)."""

    runtime: str  # "native" | "docker" | "podman"
    identity: str  # stable and path-independent: hashed into base ids
    version: str  # e.g. "PostgreSQL 15.18"
    description: str  # for people: binaries path or image reference
    image: str | None = None  # container image reference as requested
    server_uid: int | None = None  # uid that owns data directories
    server_gid: int | None = None


@attrs.frozen
class InstanceSpec:
    """One server to run. All paths are host paths."""

    instance_id: str
    data_dir: Path  # PGDATA: a snapshot-store volume owned by identity.server_uid
    run_dir: Path  # socket, server log and scripts; created by `prepare_run_dir`
    port: int  # TCP port on 127.0.0.1
    identity: RuntimeIdentity
    settings: Mapping[str, str] = attrs.field(factory=dict)  # extra `-c name=value`

    @property
    def scripts_dir(self) -> Path:
        return self.run_dir / "scripts"


class Runtime(Protocol):
    """Runs PostgreSQL servers and client tools; one adapter per technology."""

    name: str

    def probe(self) -> Probe:
        """Answer quickly whether this runtime works here (daemon answers, binaries found)."""
        ...

    def resolve(self, image: str | None) -> RuntimeIdentity:
        """Identify what would run (binaries or image digest). Raises RuntimeUnavailable."""
        ...

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        """Create `run_dir` (and its scripts/ subdir) usable by the server and tools."""
        ...

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        """Create a new cluster in the empty, existing directory `data_dir`.

        `options` are extra initdb options; the adapter always uses `-U postgres` and leaves
        authentication to the caller, who writes pg_hba.conf afterwards.
        """
        ...

    def start(self, spec: InstanceSpec) -> str:
        """Launch the server and return its runtime reference (pid or container id) at once.

        The server must outlive the engine process. Readiness is awaited by the caller.
        """
        ...

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        """True when the server (process or container) for `ref` is alive."""
        ...

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT: checkpoint, clean data dir) and wait for it. Idempotent."""
        ...

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        """Release everything the runtime holds for `ref` (container, process). Idempotent."""
        ...

    def exec_tool(
        self,
        spec: InstanceSpec,
        ref: str,
        tool: Literal["psql", "pgbench"],
        args: Sequence[str],
        on_output: OutputSink,
        cancel: threading.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Run `tool args` against the instance as `postgres` and return its exit code.

        The adapter provides the connection through libpq's PGHOST/PGPORT/PGUSER/PGDATABASE;
        output is streamed to `on_output` as it comes. Setting `cancel` kills the tool.
        """
        ...

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        """The path under which a file in `spec.scripts_dir` is visible to the tools."""
        ...
