"""The `Runtime` port for container engines, composed of one `ContainerBackend` (SPEC section 6).

`ContainerRuntime` holds everything docker and podman share: the container layout (layout.py),
image resolution and its cache (imagecache.py), housekeeping (housekeeping.py), the stop and
exec protocols. `DockerRuntime` and `PodmanRuntime` are this class with their backend.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from sqlrs.adapters.containers import backend as backend_rules
from sqlrs.adapters.containers import housekeeping, layout
from sqlrs.adapters.containers.backend import ContainerBackend, failure, one_shot, wait_exit
from sqlrs.adapters.containers.imagecache import ImageCache
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable, SqlrsError
from sqlrs.ports.runtime import InstanceSpec, OutputSink, Probe, RuntimeIdentity

PROBE_TIMEOUT = 2.0
ONE_SHOT_TIMEOUT = 300.0  # initdb of a big template can take a while on a slow disk
EXIT_CODE_TIMEOUT = 10.0


class ContainerRuntime:
    """Runs each instance's server in its own container of `backend` (see layout.py)."""

    needs_image = True

    def __init__(
        self,
        backend: ContainerBackend,
        *,
        default_image: str = layout.DEFAULT_IMAGE,
        labels: Mapping[str, str] | None = None,
    ):
        self.backend = backend
        self.name: str = backend.name
        self.default_image = default_image
        self.labels = dict(labels or {})  # extra labels on every container (e.g. sqlrs.state_dir)
        self.images = ImageCache(backend, self.labels)

    @property
    def endpoint(self) -> str:
        """The daemon/service address, for messages."""
        return self.backend.endpoint

    @property
    def cli(self) -> str:
        return self.backend.cli

    def close(self) -> None:
        self.backend.close()

    # ------------------------------------------------------------------ Runtime port -----
    def probe(self) -> Probe:
        try:
            version = self.backend.ping(PROBE_TIMEOUT)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            return Probe(
                self.name, False, f"{self.name}: daemon at {self.endpoint} does not answer ({detail})"
            )
        return Probe(self.name, True, f"{self.name} {version} at {self.endpoint}")

    def resolve(self, image: str | None, major: str | None = None) -> RuntimeIdentity:
        identity = self.images.resolve(image or self.default_image)
        found = identity.version.split()[1].split(".")[0] if len(identity.version.split()) > 1 else ""
        if major is not None and found != major:
            raise RuntimeUnavailable(f"the image {identity.image} is PostgreSQL {found}, not {major}",
                                     hint=f"use an image of PostgreSQL {major} (e.g. postgres:{major}) or "
                                          "another postgres.version")
        return identity

    def prepare_run_dir(self, identity: RuntimeIdentity, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        scripts = run_dir / "scripts"
        scripts.mkdir(exist_ok=True)
        os.chmod(scripts, 0o755)  # mounted read-only; the server user only reads it
        uid = identity.server_uid
        if os.geteuid() == 0 and uid is not None:
            gid = identity.server_gid if identity.server_gid is not None else -1
            os.chown(run_dir, uid, gid)
            os.chmod(run_dir, 0o700)
        else:
            # Not root: the container's postgres user (or its subuid) must still create its
            # socket and log here; the state directory above keeps others out.
            os.chmod(run_dir, 0o1777)

    def initdb(self, identity: RuntimeIdentity, data_dir: Path, options: Sequence[str]) -> None:
        image_id = self.images.image_id(identity)
        try:
            if os.geteuid() == 0 and identity.server_uid is not None:
                gid = identity.server_gid if identity.server_gid is not None else -1
                os.chown(data_dir, identity.server_uid, gid)
                os.chmod(data_dir, 0o700)
            else:
                code, out, err = one_shot(
                    self.backend, layout.chown_config(image_id, self.labels, data_dir), ONE_SHOT_TIMEOUT
                )
                if code != 0:
                    raise RuntimeFailure(
                        f"{self.name}: cannot hand {data_dir} to the image's postgres user",
                        details={"log": (err or out)[-4000:]},
                    )
            code, out, err = one_shot(
                self.backend, layout.initdb_config(image_id, self.labels, data_dir, options), ONE_SHOT_TIMEOUT
            )
        except SqlrsError:
            raise
        except Exception as exc:
            raise failure(self.backend, "initdb failed", exc) from exc
        if code != 0:
            raise RuntimeFailure(f"initdb failed (exit code {code})", details={"log": (err + out)[-4000:]})

    def start(self, spec: InstanceSpec) -> str:
        image_id = self.images.image_id(spec.identity)
        config = layout.server_config(spec, image_id, self.labels)
        name = layout.container_name(spec.instance_id)
        try:
            housekeeping.claim_data_dir(self.backend, spec.data_dir, name)
            container = self.backend.create(config)
        except SqlrsError:
            raise
        except Exception as exc:
            raise failure(self.backend, f"cannot create container {name}", exc) from exc
        try:
            self.backend.start(container)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.backend.remove(container)
            raise failure(self.backend, f"cannot start container {name}", exc) from exc
        return container

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        if not ref:
            return False
        try:
            state = self.backend.state(ref)
        except Exception as exc:
            raise failure(self.backend, f"cannot inspect container {ref[:12]}", exc) from exc
        return state is not None and state.running

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        if not ref:
            return
        try:
            # SIGINT: fast shutdown; then immediate shutdown; then kill the container.
            for signal, wait in (("SIGINT", timeout), ("SIGQUIT", 10.0), ("SIGKILL", 10.0)):
                state = self.backend.state(ref)
                if state is None or not state.running:
                    return
                try:
                    self.backend.kill(ref, signal)
                except Exception:
                    # it may have exited between the inspect and the kill: stopped is stopped
                    if wait_exit(self.backend, ref, backend_rules.EXIT_RACE_SECONDS) is not None:
                        return
                    raise
                if wait_exit(self.backend, ref, wait) is not None:
                    return
        except SqlrsError:
            raise
        except Exception as exc:
            raise failure(self.backend, f"cannot stop container {ref[:12]}", exc) from exc
        raise RuntimeFailure(f"{self.name}: container {ref[:12]} does not stop")

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        if ref:
            housekeeping.remove_container(self.backend, ref)

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
        backend = self.backend
        pidfile = f"/tmp/sqlrs-exec-{uuid.uuid4().hex}.pid"
        cmd = layout.tool_command(tool, args, pidfile)
        try:
            exec_id, frames = backend.exec(ref, cmd, "postgres", layout.tool_environment(spec, env), layout.SCRIPTS_DIR)
        except Exception as exc:
            state = None
            with contextlib.suppress(Exception):
                state = backend.state(ref)
            if state is None or not state.running:
                raise RuntimeFailure(
                    f"{self.name}: the instance's container {ref[:12]} is not running"
                ) from exc
            raise failure(backend, f"cannot run {tool}", exc) from exc

        done = threading.Event()
        killed = threading.Event()

        def kill() -> None:
            if killed.is_set():
                return
            killed.set()
            try:
                _, kill_frames = backend.exec(ref, ["sh", "-c", layout.kill_script(pidfile)], "postgres", {}, None)
                for _ in kill_frames:
                    pass
            except Exception:
                pass

        watcher: threading.Thread | None = None
        if cancel is not None:

            def watch() -> None:
                while not done.is_set():
                    if cancel.wait(0.05):
                        if not done.is_set():
                            kill()
                        return

            watcher = threading.Thread(target=watch, name=f"sqlrs-cancel-{tool}", daemon=True)
            watcher.start()
        chunks = iter(frames)
        try:
            while True:
                try:
                    out, err = next(chunks)
                except StopIteration:
                    break
                except Exception as exc:  # the stream broke (daemon restarted, connection lost)
                    raise failure(backend, f"lost the output of {tool}", exc) from exc
                if out:
                    on_output("stdout", out)
                if err:
                    on_output("stderr", err)
        except BaseException:  # including the caller's own errors from on_output
            done.set()
            kill()
            raise
        finally:
            done.set()
        if watcher is not None:
            watcher.join(timeout=10.0)
        return self._exit_code(exec_id, tool)

    def _exit_code(self, exec_id: str, tool: str) -> int:
        deadline = time.monotonic() + EXIT_CODE_TIMEOUT
        delay = 0.005
        while True:
            try:
                running, code = self.backend.exec_result(exec_id)
            except Exception as exc:
                raise failure(self.backend, f"cannot read the exit code of {tool}", exc) from exc
            if not running and code is not None:
                return code
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"{self.name}: {tool} ended but its exit code is unknown")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        return layout.tool_path(spec, host_path)

    # ------------------------------------------------------------------ housekeeping -----
    def leftovers(self, labels: Mapping[str, str | None] | None = None) -> list[str]:
        """Ids of containers sqlrs made: all of them, or those carrying `labels`."""
        return housekeeping.leftovers(self.backend, labels)

    def remove_container(self, ref: str) -> None:
        """Kill and remove one container (e.g. one of `leftovers`); a missing one is fine."""
        housekeeping.remove_container(self.backend, ref)
