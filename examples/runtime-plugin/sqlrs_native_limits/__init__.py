"""sqlrs-native-limits: the native runtime with every PostgreSQL server under resource limits.

A build that restores a big dump or a test run that starts a dozen servers should not make a
laptop unusable. The `native-limits` runtime runs each server of sqlrs' native runtime (the same
binaries, found and configured the same way: `runtime.native.pg_bin`, `runtime.native.user`)
under

- `nice -n 10`: CPU goes to the editor and the browser first;
- `ionice -c 2 -n 7` (best effort, lowest level): so does the disk;
- `prlimit --as=4G --core=0`: a runaway query fails with "out of memory" instead of swapping
  the machine to a halt, and a crashing server leaves no multi-gigabyte core file.

The limits are read from the engine's environment when it makes the runtime:
`SQLRS_LIMITS_NICE` (0-19), `SQLRS_LIMITS_IO` (`idle` or `best-effort[:0-7]`),
`SQLRS_LIMITS_MEMORY` (a size like `2G`, or `none`). Choose it with `--runtime native-limits`
or `sqlrs config set container.runtime native-limits`; `auto` never picks it over `native`.

Registered in the entry point group `sqlrs.runtimes` (pyproject.toml); tested with
`sqlrs.testing.runtime` against real PostgreSQL servers (tests/).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from sqlrs.adapters.native import NATIVE_SETTINGS, make_native
from sqlrs.domain.sizes import parse_size
from sqlrs.ports.runtime import (
    InstanceSpec,
    OutputSink,
    Probe,
    Runtime,
    RuntimeContext,
    RuntimeIdentity,
    RuntimePlugin,
)

NAME = "native-limits"
TOOLS = ("nice", "ionice", "prlimit")  # coreutils, util-linux, util-linux
TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@attrs.frozen
class Limits:
    """What each server runs under."""

    nice: int = 10  # added niceness, 0-19
    io_class: Literal["best-effort", "idle"] = "best-effort"
    io_level: int = 7  # best-effort level, 0 (first) to 7 (last)
    address_space: int | None = 4 << 30  # bytes of virtual memory per server process; None: unlimited

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Limits:
        """The limits SQLRS_LIMITS_* ask for (defaults for those unset); ValueError saying which is wrong."""
        limits = cls()
        if environ.get("SQLRS_LIMITS_NICE"):
            nice = int(environ["SQLRS_LIMITS_NICE"])
            if not 0 <= nice <= 19:
                raise ValueError(f"SQLRS_LIMITS_NICE must be 0-19, not {nice}")
            limits = attrs.evolve(limits, nice=nice)
        if environ.get("SQLRS_LIMITS_IO"):
            io_class, _, level = environ["SQLRS_LIMITS_IO"].partition(":")
            if io_class == "idle" and not level:
                limits = attrs.evolve(limits, io_class="idle")
            elif io_class == "best-effort" and (not level or level in "01234567"):
                limits = attrs.evolve(limits, io_class="best-effort", io_level=int(level or 7))
            else:
                wrong = environ["SQLRS_LIMITS_IO"]
                raise ValueError(f"SQLRS_LIMITS_IO must be idle or best-effort[:0-7], not {wrong!r}")
        memory = environ.get("SQLRS_LIMITS_MEMORY")
        if memory:
            limits = attrs.evolve(limits, address_space=None if memory == "none" else parse_size(memory))
        return limits

    def command(self, tools: Mapping[str, str]) -> list[str]:
        """The command the postgres command line follows (each tool execs the next)."""
        io = ["-c", "3"] if self.io_class == "idle" else ["-c", "2", "-n", str(self.io_level)]
        memory = [f"--as={self.address_space}"] if self.address_space is not None else []
        return [tools["nice"], "-n", str(self.nice), tools["ionice"], *io, tools["prlimit"], *memory, "--core=0",
                "--"]

    def describe(self) -> str:
        io = "idle" if self.io_class == "idle" else f"best-effort:{self.io_level}"
        memory = "unlimited" if self.address_space is None else f"{self.address_space >> 20} MiB"
        return f"nice {self.nice}, io {io}, address space {memory}"


class LimitedNativeRuntime:
    """The Runtime port: sqlrs' native runtime, its servers started under `limits`."""

    name = NAME
    needs_image = False

    def __init__(self, native: Runtime, limits: Limits, missing: Sequence[str] = ()):
        self.native = native
        self.limits = limits
        self.missing = tuple(missing)  # tools not found: the runtime is unavailable
        self._inner: dict[str, RuntimeIdentity] = {}  # our identities -> the native runtime's

    def probe(self) -> Probe:
        if self.missing:
            return Probe(self.name, False, f"{', '.join(self.missing)} not found in {TOOL_PATH} "
                                           "(install coreutils and util-linux)")
        inner = self.native.probe()
        return Probe(self.name, inner.available, f"{inner.reason}; servers under {self.limits.describe()}"
                     if inner.available else inner.reason)

    def resolve(self, image: str | None, major: str | None = None) -> RuntimeIdentity:
        inner = self.native.resolve(None, major)
        # its own states: an instance of one always runs under the limits (warm instances included)
        outer = attrs.evolve(inner, runtime=self.name, identity=f"{self.name}/{inner.identity}",
                             description=f"{inner.description} under {self.limits.describe()}")
        self._inner[outer.identity] = inner
        return outer

    def _native(self, identity: RuntimeIdentity) -> RuntimeIdentity:
        """The native runtime's own identity behind one of ours (it picks its binaries by it)."""
        return self._inner.get(identity.identity, identity)

    def _spec(self, spec: InstanceSpec) -> InstanceSpec:
        return attrs.evolve(spec, identity=self._native(spec.identity))

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        self.native.prepare_run_dir(self._native(identity), run_dir)

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        self.native.initdb(self._native(identity), data_dir, options)

    def start(self, spec: InstanceSpec) -> str:
        return self.native.start(self._spec(spec))

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        return self.native.is_running(spec, ref)

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        self.native.stop(spec, ref, timeout)

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        self.native.discard(spec, ref)

    def exec_tool(self, spec: InstanceSpec, ref: str, tool: Literal["psql", "pgbench"], args: Sequence[str],
                  on_output: OutputSink, cancel: threading.Event | None = None,
                  env: Mapping[str, str] | None = None) -> int:
        return self.native.exec_tool(self._spec(spec), ref, tool, args, on_output, cancel, env)

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        return self.native.tool_path(self._spec(spec), host_path)


def make(context: RuntimeContext) -> Runtime:
    """The runtime the engine of `context` uses (RuntimePlugin.make)."""
    limits = Limits.from_environ(os.environ)
    tools = {tool: shutil.which(tool, path=TOOL_PATH) for tool in TOOLS}
    found = {tool: path for tool, path in tools.items() if path is not None}
    missing = [tool for tool in TOOLS if tool not in found]
    native = make_native(context, wrap_server=() if missing else limits.command(found))
    return LimitedNativeRuntime(native, limits, missing)


PLUGIN = RuntimePlugin(NAME, make, priority=50, settings=NATIVE_SETTINGS,
                       description="the native runtime, each server under nice, ionice and prlimit")
