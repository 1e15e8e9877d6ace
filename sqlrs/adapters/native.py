"""Native runtime: PostgreSQL binaries run directly on the host (the Runtime port).

Which binaries it runs is found by `sqlrs/adapters/pgbuilds.py` (configured, on PATH, installed
or embedded; by PostgreSQL major). One runtime serves several majors at once: each identity
remembers its build.

PostgreSQL refuses to run as root, so a root engine runs servers and tools as an unprivileged
user (default `postgres`). That user must reach the binaries: when it cannot (a venv under
/root, mode 700), the build is copied once into the state directory.

`PLUGIN` registers it (entry point group `sqlrs.runtimes`); `make_native` is the public way for
another runtime to build on it (examples/runtime-plugin runs its servers under resource limits).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from sqlrs.adapters.pgbuilds import PgBuild, candidate_bin_dirs, inspect_build, missing_major
from sqlrs.adapters.pgfiles import is_postgres, pid_alive, read_postmaster_pid, tail, wait_stopped
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable
from sqlrs.ports.runtime import (
    InstanceSpec,
    OutputSink,
    Probe,
    RuntimeContext,
    RuntimeIdentity,
    RuntimePlugin,
    ToolCommand,
)

_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")  # util-linux: run as another user


class NativeRuntime:
    """Runs PostgreSQL binaries on the host; one server process per instance."""

    name = "native"
    needs_image = False

    def __init__(self, *, pg_bin: str | None, user: str, binaries_cache: Path, wrap_server: Sequence[str] = ()):
        """`wrap_server`: a command the server runs under (e.g. `nice -n 10`), given the postgres
        command line after its own words; it must exec it, so the server keeps its pid."""
        self._configured = pg_bin
        self._user_name = user
        self._binaries_cache = binaries_cache
        self._wrap_server = tuple(wrap_server)
        self._builds: dict[str | None, PgBuild] = {}  # by the major asked for (None: the default)
        self._by_identity: dict[str, PgBuild] = {}  # what an identity this runtime gave runs with
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    # -- who runs the server ---------------------------------------------------------------
    def _server_ids(self) -> tuple[int, int] | None:
        """(uid, gid) to run as, or None to run as ourselves (engine not root)."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(self._user_name)
        except KeyError:
            raise RuntimeUnavailable(
                f"PostgreSQL cannot run as root and user {self._user_name!r} does not exist",
                hint="create it (useradd --system --home /var/lib/postgresql postgres) "
                "or set runtime.native.user",
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _as_server_user(self, argv: list[str]) -> tuple[list[str], dict[str, Any]]:
        """`argv` and Popen arguments that run it as the server user (as is when not root).

        With util-linux's setpriv the identity changes in the child after exec: Popen can then
        vfork, where `user=`/`group=` make it fork the whole engine (~3 ms per server start).
        """
        ids = self._server_ids()
        if ids is None:
            return argv, {}
        uid, gid = ids
        if _SETPRIV:
            return [_SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *argv], {}
        groups = [g.gr_gid for g in grp.getgrall() if self._user_name in g.gr_mem]
        return argv, {"user": uid, "group": gid, "extra_groups": groups}

    def _can_use(self, build_dir: Path) -> bool:
        ids = self._server_ids()
        if ids is None:
            return True
        argv, user_kwargs = self._as_server_user([str(build_dir / "postgres"), "--version"])
        probe = subprocess.run(argv, capture_output=True, check=False, **user_kwargs)
        return probe.returncode == 0

    def _reachable_build(self, build: PgBuild) -> PgBuild:
        """The build itself, or a copy the server user can execute."""
        if self._can_use(build.bin_dir):
            return build
        install_root = build.bin_dir.parent
        target = self._binaries_cache / f"pg-{build.build_id}-{build.version.split()[1]}"
        if not (target / "bin" / "postgres").exists():
            staging = target.with_name(target.name + f".tmp{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            self._binaries_cache.mkdir(parents=True, exist_ok=True)
            os.chmod(self._binaries_cache, 0o755)
            shutil.copytree(install_root, staging, symlinks=True)
            for path in [staging, *staging.rglob("*")]:
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, 0o755)
            os.replace(staging, target)
        copied = attrs.evolve(build, bin_dir=target / "bin")
        if not self._can_use(copied.bin_dir):
            raise RuntimeUnavailable(
                f"user {self._user_name!r} cannot execute PostgreSQL binaries in {copied.bin_dir}",
                hint="make the state directory traversable by that user or set runtime.native.pg_bin",
            )
        return copied

    # -- Runtime port ----------------------------------------------------------------------
    def probe(self) -> Probe:
        try:
            build = self._resolve_build()
        except RuntimeUnavailable as exc:
            return Probe(self.name, False, exc.message)
        return Probe(self.name, True, f"{build.version} at {build.bin_dir}")

    def _resolve_build(self, major: str | None = None) -> PgBuild:
        with self._lock:
            cached = self._builds.get(major)
        if cached is not None:
            return cached
        self._server_ids()  # fail early and clearly when root has no server user
        errors: list[str] = []
        for origin, bin_dir in candidate_bin_dirs(self._configured, major):
            if major is not None and not (bin_dir / "postgres").exists():
                continue
            try:
                build = inspect_build(bin_dir)
            except RuntimeUnavailable as exc:
                errors.append(f"{origin}: {exc.message}")
                continue
            if major is not None and build.major != major:
                continue
            build = self._reachable_build(build)
            with self._lock:
                self._builds[major] = build
                self._by_identity[build.identity] = build
            return build
        if major is not None:
            raise missing_major(major)
        raise RuntimeUnavailable(
            "no PostgreSQL binaries found" + (f" ({'; '.join(errors)})" if errors else ""),
            hint="install postgresql (apt install postgresql) or set runtime.native.pg_bin",
        )

    def resolve(self, image: str | None, major: str | None = None) -> RuntimeIdentity:
        build = self._resolve_build(major)
        ids = self._server_ids()
        uid, gid = ids if ids is not None else (os.geteuid(), os.getegid())
        return RuntimeIdentity(
            runtime=self.name,
            identity=build.identity,
            version=build.version,
            description=f"{build.version} at {build.bin_dir}",
            image=None,
            server_uid=uid,
            server_gid=gid,
        )

    def _bin(self, tool: str, identity: RuntimeIdentity) -> str:
        """The tool of the build `identity` names (the default build for an identity this
        runtime did not give, which only stop/discard handles carry and they run no binary)."""
        with self._lock:
            build = self._by_identity.get(identity.identity)
        return str((build or self._resolve_build()).bin_dir / tool)

    def _chown(self, identity: RuntimeIdentity, path: Path) -> None:
        if os.geteuid() == 0 and identity.server_uid is not None:
            os.chown(path, identity.server_uid, identity.server_gid if identity.server_gid is not None else -1)

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "scripts").mkdir(exist_ok=True)
        os.chmod(run_dir, 0o700)
        self._chown(identity, run_dir)
        self._chown(identity, run_dir / "scripts")

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        os.chmod(data_dir, 0o700)
        self._chown(identity, data_dir)
        argv, user_kwargs = self._as_server_user([self._bin("initdb", identity), "-D", str(data_dir), "-U", "postgres",
                                                  *options])
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/", **user_kwargs)
        if result.returncode != 0:
            raise RuntimeFailure("initdb failed", details={"log": (result.stderr or result.stdout)[-4000:]})

    def start(self, spec: InstanceSpec) -> str:
        settings = {
            "port": str(spec.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(spec.run_dir),
            **spec.settings,
        }
        # PostgreSQL's own postmaster.pid interlock would refuse too, but only after start
        # returned a pid; refusing here says so at once, in the words the container runtimes use.
        running = read_postmaster_pid(spec.data_dir)
        if running is not None and running[0] > 1 and self._alive(running[0]):
            raise RuntimeFailure(f"postgres (pid {running[0]}) already runs a server on {spec.data_dir}")
        argv = [*self._wrap_server, self._bin("postgres", spec.identity), "-D", str(spec.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        argv, user_kwargs = self._as_server_user(argv)
        log_path = spec.run_dir / "postgres.log"
        with open(log_path, "ab") as log:
            if os.geteuid() == 0 and spec.identity.server_uid is not None:
                os.chown(log_path, spec.identity.server_uid, -1)
            try:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd="/",
                    start_new_session=True,  # outlives the engine; not hit by the terminal's Ctrl+C
                    **user_kwargs,
                )
            except OSError as exc:
                raise RuntimeFailure(f"cannot start postgres: {exc}") from exc
        with self._lock:
            self._children[child.pid] = child
        return str(child.pid)

    def _alive(self, pid: int) -> bool:
        with self._lock:
            child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            with self._lock:
                self._children.pop(pid, None)
            return False
        return pid_alive(pid) and is_postgres(pid, unknown=False)

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        return bool(ref) and self._alive(int(ref))

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        pid = int(ref) if ref else 0
        info = read_postmaster_pid(spec.data_dir)
        if info is not None and (not pid or not self._alive(pid)):
            pid = info[0]
        if not pid or not self._alive(pid):
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if wait_stopped(spec.data_dir, lambda: self._alive(pid), wait) or not self._alive(pid):
                return
        log = tail(spec.run_dir / "postgres.log")
        raise RuntimeFailure(f"postgres (pid {pid}) does not stop", details={"log": log})

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        if ref and self._alive(int(ref)):
            self.stop(spec, ref, timeout=10.0)

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
        argv, user_kwargs = self._as_server_user([self._bin(tool, spec.identity), *args])
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=str(spec.scripts_dir),
                env=_tool_env(spec, env),
                start_new_session=True,
                **user_kwargs,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {tool}: {exc}") from exc
        return pump(child, on_output, cancel)

    def tool_command(self, spec: InstanceSpec, tool: Literal["psql"], args: Sequence[str],
                     env: Mapping[str, str] | None = None) -> ToolCommand | None:
        argv, user_kwargs = self._as_server_user([self._bin(tool, spec.identity), *args])
        if user_kwargs:  # no setpriv: the user changes only through Popen's arguments, which callers do not pass
            return None
        return ToolCommand(argv=tuple(argv), env=_tool_env(spec, env), cwd=str(spec.scripts_dir))

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        return str(host_path)


def _tool_env(spec: InstanceSpec, env: Mapping[str, str] | None) -> dict[str, str]:
    """A client tool's environment: libpq reaches the instance by its Unix socket."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(spec.scripts_dir),
        "LANG": "C.UTF-8",
        "PGHOST": str(spec.run_dir),
        "PGPORT": str(spec.port),
        "PGUSER": "postgres",
        "PGDATABASE": "postgres",
        **(env or {}),
    }


NATIVE_SETTINGS = ("runtime.native.pg_bin", "runtime.native.user")


def make_native(context: RuntimeContext, wrap_server: Sequence[str] = ()) -> NativeRuntime:
    """The native runtime as the engine configures it (`NATIVE_SETTINGS`), its servers run under
    `wrap_server` (see NativeRuntime)."""
    return NativeRuntime(pg_bin=context.setting("runtime.native.pg_bin") or None,
                         user=str(context.setting("runtime.native.user")), binaries_cache=context.binaries_dir,
                         wrap_server=wrap_server)


PLUGIN = RuntimePlugin("native", make_native, priority=100, settings=NATIVE_SETTINGS,
                       description="PostgreSQL binaries on this host (installed, or the embedded 16/18 builds)")


def pump(child: subprocess.Popen[bytes], on_output: OutputSink, cancel: threading.Event | None) -> int:
    """Stream a child's stdout/stderr to `on_output` until it exits; kill it on `cancel`."""
    selector = selectors.DefaultSelector()
    assert child.stdout is not None and child.stderr is not None
    selector.register(child.stdout, selectors.EVENT_READ, "stdout")
    selector.register(child.stderr, selectors.EVENT_READ, "stderr")
    open_streams = 2
    killed_at: float | None = None
    while open_streams:
        if cancel is not None and cancel.is_set() and killed_at is None:
            _kill_group(child, signal.SIGTERM)
            killed_at = time.monotonic()
        if killed_at is not None and time.monotonic() - killed_at > 3:
            _kill_group(child, signal.SIGKILL)
        for key, _ in selector.select(timeout=0.1):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            on_output(key.data, data)
    selector.close()
    child.stdout.close()
    child.stderr.close()
    return child.wait()


def _kill_group(child: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
