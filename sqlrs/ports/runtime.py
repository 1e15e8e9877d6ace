"""The `Runtime` port: how sqlrs runs PostgreSQL servers.

A runtime turns a data directory on the host into a running server on 127.0.0.1 and runs
PostgreSQL client tools (psql, pgbench) against it. Adapters: native binaries, docker, podman,
and whatever another package registers in the entry point group `sqlrs.runtimes` (a `RuntimePlugin`,
docs/extending.md). Data directories always live on the host (in the snapshot store), whatever the runtime, so
states and instances are the same store objects for every runtime.

Conventions every adapter follows:
- The server listens on TCP 127.0.0.1:`spec.port` (containers: published on 127.0.0.1 only) and
  on a Unix socket named `.s.PGSQL.<spec.port>` in `spec.run_dir` on the host, so the engine
  can reach it without a password (`local all all trust` in pg_hba.conf) whatever the runtime.
- The cluster's bootstrap superuser is `postgres` unless initdb's options name another;
  tools run as PGUSER `postgres` unless their `env` says otherwise; TCP clients need scram-sha-256.
- Readiness, clean shutdown and the server's pid are read from `postmaster.pid` in the data dir.
- The server appends its log to `postgres.log` in `spec.run_dir`.
- Servers outlive the adapter that started them: a new adapter (an engine restart) answers
  `is_running`, `exec_tool`, `stop` and `discard` for a `ref` an earlier one returned.

`sqlrs.testing.runtime` checks these promises on an adapter (tests/integration/test_runtime_contract.py
runs it on every built-in one and on the fake of the service tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

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

    runtime: str  # the runtime's name: "native", "docker", "podman", or a plugin's
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
    # True: servers run from a container image, which `resolve` is given (a state's instances need the
    # image its base was made with); False: the runtime runs without an image and `resolve` gets None.
    needs_image: bool

    def probe(self) -> Probe:
        """Answer quickly whether this runtime works here (daemon answers, binaries found).

        Never raises: a runtime that does not work is a `Probe` with `available` False and the
        reason. `Probe.name` is the runtime's `name`.
        """
        ...

    def resolve(self, image: str | None, major: str | None = None) -> RuntimeIdentity:
        """Identify what would run (binaries or image digest). Raises RuntimeUnavailable.

        The identity is stable: the same binaries or image give an equal `RuntimeIdentity` from
        any adapter instance (it is hashed into base state ids). `runtime` is the adapter's
        `name`, `version` starts with "PostgreSQL <major>.", `image` is `image` as requested
        (None for runtimes without images), `server_uid`/`server_gid` own the data directories.

        `major` ("16") asks for that PostgreSQL major: a runtime without images picks binaries
        of that major (RuntimeUnavailable saying what to install when it has none); a runtime
        with images checks that `image` is that major. One adapter serves several majors at
        once: the identity says which one a server, initdb or tool runs with.
        """
        ...

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        """Create `run_dir` (and its scripts/ subdir) usable by the server and tools.

        Idempotent: files already there stay. A root engine gives `run_dir` to the server user.
        """
        ...

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        """Create a new cluster in the empty, existing directory `data_dir`.

        `options` are extra initdb options; the adapter gives `-U postgres` first (a `-U NAME` in
        `options` names another bootstrap superuser: initdb takes the last one) and leaves
        authentication to the caller, who writes pg_hba.conf afterwards. The cluster belongs to
        `identity.server_uid`/`server_gid`, mode 0700. A failing initdb raises RuntimeFailure
        ("initdb failed ...") with initdb's output in `details["log"]`.
        """
        ...

    def start(self, spec: InstanceSpec) -> str:
        """Launch the server and return its runtime reference (pid or container id) at once.

        The server must outlive the engine process. Readiness is awaited by the caller. The
        server uses `spec.settings` (`-c name=value`) and listens as the module docstring says.
        A data directory a server already runs on is refused with RuntimeFailure ("... already
        runs a server on ...") and that server is left alone.
        """
        ...

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        """True when the server (process or container) for `ref` is alive; False once it was
        stopped or discarded, or when `ref` names nothing."""
        ...

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT: checkpoint, clean data dir) and wait for it. Idempotent.

        Afterwards the data directory has no postmaster.pid (a later start needs no crash
        recovery). A `ref` that is gone is nothing to do; a server that does not stop raises
        RuntimeFailure.
        """
        ...

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        """Release everything the runtime holds for `ref` (container, process). Idempotent.

        Also for a server that still runs: afterwards no process or container of it is left.
        """
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

        The adapter provides the connection through libpq's PGHOST/PGPORT/PGUSER/PGDATABASE
        (user and database `postgres`); `env` adds to or overrides that environment. The tool's
        exit code is returned as it is (psql with ON_ERROR_STOP: 3 on a script error); stdout
        and stderr stay apart and are streamed to `on_output` as they come. Setting `cancel`
        kills the tool: this returns soon after, with a non-zero exit code. A tool that cannot
        be started raises RuntimeFailure.
        """
        ...

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        """The path under which a file in `spec.scripts_dir` (or a subdirectory of it) is visible
        to the tools, e.g. for `psql -f` or `\\i`."""
        ...


@attrs.frozen
class ToolCommand:
    """A client tool as a process of this host: what `subprocess.Popen` needs to start it."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str


@runtime_checkable
class HostTools(Protocol):
    """Optional for a runtime: its tools are processes of this host (the native runtime), so a
    build can keep one psql open across its steps (reading them from its stdin) instead of starting
    one per step. A runtime without it runs every step through `exec_tool`."""

    def tool_command(self, spec: InstanceSpec, tool: Literal["psql"], args: Sequence[str],
                     env: Mapping[str, str] | None = None) -> ToolCommand | None:
        """How to start `tool args` against the instance as `exec_tool` would (same environment,
        user and working directory), its stdin left to the caller; None when it cannot be started
        as a plain process (then the caller uses `exec_tool`)."""
        ...


@attrs.frozen
class RuntimeContext:
    """What the engine gives a runtime plugin's `make`."""

    state_dir: Path  # the engine's state directory
    binaries_dir: Path  # where the runtime may keep files between engine runs (e.g. binaries the server user can run)
    # put on whatever the runtime makes that outlives the engine (containers), so that it is found again
    labels: Mapping[str, str]
    setting: Callable[[str], Any]  # a config key's value (sqlrs.domain.config; `sqlrs config get KEY`)


@attrs.frozen
class RuntimePlugin:
    """What an entry point of the group `sqlrs.runtimes` names (its name is the entry point's).

    The engine calls `make` when it first needs the runtime (so a module `make` imports, e.g. an
    SDK, costs nothing until then) and again when a config key in `settings` changes.
    """

    name: str
    make: Callable[[RuntimeContext], Runtime]
    # `auto` tries runtimes from the highest priority down and takes the first that is available
    # (built in: docker 300, podman 200, native 100)
    priority: int
    settings: tuple[str, ...] = ()  # config keys `make` reads
    description: str = ""  # for people, e.g. in docs and `sqlrs status`
