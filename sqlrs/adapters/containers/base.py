"""What the docker and podman runtimes share: everything but the SDK calls (SPEC section 6).

A server runs in one detached container per instance, built from the image the identity names:

- the host data directory is bind-mounted read-write at /var/lib/postgresql/data (PGDATA),
- the host run directory at /var/run/postgresql, so the Unix socket `.s.PGSQL.<port>` and the
  server log `postgres.log` appear in the host run directory, as with the native runtime,
- the host scripts directory (inside the run directory) again, read-only, at /sqlrs/scripts,
- the server listens on `<port>` inside the container, published on 127.0.0.1:<port> only.

The image must follow the official `postgres` image's contract: postgres binaries on PATH, a
`postgres` user, `sh`, `id`, `cat`, `kill` and `sleep`. Entrypoints are always overridden, so
the image's `docker-entrypoint.sh` never runs (it would initdb into its own PGDATA).

Subclasses implement the `_backend` hooks with their SDK; SDK objects never leave them.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from sqlrs.adapters.pgfiles import pid_alive, read_postmaster_pid
from sqlrs.domain.errors import RuntimeFailure, RuntimeUnavailable, SqlrsError
from sqlrs.ports.runtime import InstanceSpec, OutputSink, Probe, RuntimeIdentity

DEFAULT_IMAGE = "postgres:17"
PGDATA = "/var/lib/postgresql/data"
RUN_DIR = "/var/run/postgresql"
SCRIPTS_DIR = "/sqlrs/scripts"
SERVER_LOG = "postgres.log"
SHM_SIZE = "256m"
PROBE_TIMEOUT = 2.0
ONE_SHOT_TIMEOUT = 300.0  # initdb of a big template can take a while on a slow disk

LABEL_PREFIX = "sqlrs."
LABEL_INSTANCE = "sqlrs.instance"
LABEL_DATA_DIR = "sqlrs.data_dir"
LABEL_RUN_DIR = "sqlrs.run_dir"
LABEL_ROLE = "sqlrs.role"  # "server" | "initdb" | "inspect"
LABEL_PORT = "sqlrs.port"

# Settings the container layout needs: the caller's values for them are ignored.
_FIXED_SETTINGS = ("port", "listen_addresses", "unix_socket_directories")
_NAME_RE = re.compile(r"[^a-zA-Z0-9_.-]")

Frames = Iterator[tuple[bytes | None, bytes | None]]


@attrs.frozen
class ImageInfo:
    """What the runtime knows about a local image."""

    id: str  # "sha256:<hex>" (config digest), the same in docker and podman for the same image
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:<hex>"
    manifest_digest: str | None = None  # podman: digest of the image's own manifest


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


@attrs.frozen
class ImageFacts:
    version: str  # "PostgreSQL 16.14"
    uid: int
    gid: int


def normalize_repository(reference: str) -> str:
    """`postgres:17` -> `docker.io/library/postgres`; tags and digests are dropped."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) == 1 or not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if len(parts) == 1:
            parts = ["library", *parts]
        parts = ["docker.io", *parts]
    if parts[0] in ("index.docker.io", "registry-1.docker.io"):
        parts[0] = "docker.io"
    return "/".join(parts)


def content_digest(reference: str, info: ImageInfo) -> str:
    """The image's content digest: its registry digest when known, else its local image id.

    - A reference by digest (`repo@sha256:...`) is that digest.
    - Registry digests of the requested repository come first, then any other registry's.
      `localhost/...` digests are podman's own bookkeeping for images that never came from a
      registry (built, loaded, imported): they are skipped, so an image loaded into both
      docker and podman gets the same identity (its id) in both.
    - Podman lists both the manifest-list digest and the platform manifest's digest of a
      multi-arch image; docker only the former. The list digest (not the image's own manifest
      digest) is preferred, so both runtimes agree.
    """
    if "@" in reference:
        digest = reference.split("@", 1)[1]
        if digest.startswith("sha256:"):
            return digest
    wanted = normalize_repository(reference)
    same_repo: list[str] = []
    other_repo: list[str] = []
    for entry in info.repo_digests:
        if "@" not in entry:
            continue
        repo, digest = entry.split("@", 1)
        repo = normalize_repository(repo)
        if repo.split("/", 1)[0] == "localhost" or not digest.startswith("sha256:"):
            continue
        (same_repo if repo == wanted else other_repo).append(digest)
    for candidates in (same_repo, other_repo):
        if not candidates:
            continue
        preferred = sorted({d for d in candidates if d != info.manifest_digest})
        return preferred[0] if preferred else sorted(set(candidates))[0]
    return info.id if info.id.startswith("sha256:") else f"sha256:{info.id}"


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"postgres" in handle.read()
    except OSError:
        return True  # cannot tell: assume the worst


def container_name(instance_id: str) -> str:
    return "sqlrs-" + _NAME_RE.sub("-", instance_id)


def _kill_script(pidfile: str) -> str:
    """Shell run inside the container: SIGINT (psql cancels its query), then TERM, then KILL."""
    return (
        f'f={pidfile}; i=0; while [ ! -s "$f" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; '
        '[ -s "$f" ] || exit 0; pid=$(cat "$f"); '
        "for sig in INT TERM KILL; do "
        'kill -s $sig "$pid" 2>/dev/null || break; i=0; '
        'while kill -0 "$pid" 2>/dev/null && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -0 "$pid" 2>/dev/null || break; done; rm -f "$f"'
    )


class ContainerRuntime:
    """The `Runtime` port for container engines; `DockerRuntime`/`PodmanRuntime` add the SDK."""

    name: str = "container"
    cli: str = "docker"  # for hints: the command line tool of this runtime

    def __init__(
        self,
        *,
        base_url: str | None = None,
        default_image: str = DEFAULT_IMAGE,
        labels: Mapping[str, str] | None = None,
    ):
        self._base_url = base_url  # the daemon's API socket; None: the SDK's own default
        self._client: Any = None  # the SDK client, made on first use
        self._client_lock = threading.Lock()
        self.default_image = default_image
        self.labels = dict(labels or {})  # extra labels on every container (e.g. sqlrs.state_dir)
        self._facts: dict[str, ImageFacts] = {}  # image id -> facts, discovered once
        self._image_ids: dict[str, str] = {}  # identity -> local image id
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ backend hooks ----
    @property
    def endpoint(self) -> str:
        """The daemon/service address, for messages."""
        raise NotImplementedError

    def _ping(self, timeout: float) -> str:
        """Ask the daemon; return its version. Raise anything when it does not answer."""
        raise NotImplementedError

    def _image(self, reference: str) -> ImageInfo | None:
        """The local image `reference` (name, name@digest or id), None when absent."""
        raise NotImplementedError

    def _pull(self, reference: str) -> None:
        raise NotImplementedError

    def _create(self, config: ContainerConfig) -> str:
        """Create (not start) a container; return its id."""
        raise NotImplementedError

    def _start(self, container: str) -> None:
        raise NotImplementedError

    def _state(self, container: str) -> ContainerState | None:
        """None when the container does not exist."""
        raise NotImplementedError

    def _kill(self, container: str, signal: str) -> None:
        """Send a signal; a missing or stopped container is fine."""
        raise NotImplementedError

    def _logs(self, container: str) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def _remove(self, container: str) -> None:
        """Remove with force (and anonymous volumes); a missing container is fine."""
        raise NotImplementedError

    def _find(self, labels: Mapping[str, str | None], running_only: bool = False) -> list[str]:
        """Ids of containers carrying all `labels` (a None value: the label with any value)."""
        raise NotImplementedError

    def _exec(
        self, container: str, cmd: Sequence[str], user: str, env: Mapping[str, str], workdir: str | None
    ) -> tuple[str, Frames]:
        """Start an exec; return its id and an iterator of (stdout, stderr) chunks until it ends."""
        raise NotImplementedError

    def _exec_result(self, exec_id: str) -> tuple[bool, int | None]:
        """(still running, exit code) of an exec."""
        raise NotImplementedError

    def _is_not_found(self, exc: BaseException) -> bool:
        return False

    # ------------------------------------------------------------------ helpers ----------
    def _failure(self, what: str, exc: BaseException) -> RuntimeFailure:
        text = str(exc).strip() or type(exc).__name__
        return RuntimeFailure(f"{self.name}: {what}: {text}")

    def _wait_exit(self, container: str, timeout: float) -> ContainerState | None:
        """Wait until the container is not running; its final state, None on timeout.

        A container that does not exist (any more) counts as exited with no exit code.
        """
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            state = self._state(container)
            if state is None or not state.running:
                return state or ContainerState(False, "missing", None)
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def _one_shot(self, config: ContainerConfig, timeout: float = ONE_SHOT_TIMEOUT) -> tuple[int, str, str]:
        """Run a throwaway container to its end: (exit code, stdout, stderr). Always removed."""
        container = self._create(config)
        try:
            self._start(container)
            state = self._wait_exit(container, timeout)
            if state is None:
                raise RuntimeFailure(
                    f"{self.name}: {' '.join(config.entrypoint)} did not finish within {timeout:.0f}s"
                )
            out, err = self._logs(container)
            code = state.exit_code if state.exit_code is not None else -1
            return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        finally:
            with contextlib.suppress(Exception):
                self._remove(container)

    def _image_facts(self, image_id: str, reference: str) -> ImageFacts:
        """postgres version and the postgres user's uid/gid, asked once per image id."""
        with self._lock:
            cached = self._facts.get(image_id)
        if cached is not None:
            return cached
        script = "postgres --version && id -u postgres && id -g postgres"
        config = ContainerConfig(
            image=image_id,
            entrypoint=("sh", "-c", script),
            command=(),
            user="0",
            labels={**self.labels, LABEL_ROLE: "inspect"},
            network=False,
        )
        try:
            code, out, err = self._one_shot(config, timeout=120.0)
        except SqlrsError:
            raise
        except Exception as exc:
            raise self._failure(f"cannot inspect image {reference}", exc) from exc
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if code != 0 or len(lines) < 3 or not lines[1].isdigit() or not lines[2].isdigit():
            raise RuntimeUnavailable(
                f"image {reference} does not look like a PostgreSQL image "
                f"(`{script}` exited {code}: {(err or out).strip()[-500:]})",
                hint="use an image following the official postgres image's contract "
                "(postgres binaries on PATH, a postgres user), e.g. postgres:17",
            )
        version = lines[0].replace("postgres (PostgreSQL)", "PostgreSQL")
        facts = ImageFacts(version=version, uid=int(lines[1]), gid=int(lines[2]))
        with self._lock:
            self._facts[image_id] = facts
        return facts

    def _local_image(self, reference: str) -> ImageInfo:
        """The image, pulled when it is missing and the runtime can pull it."""
        try:
            info = self._image(reference)
        except SqlrsError:
            raise
        except Exception as exc:
            raise self._failure(f"cannot inspect image {reference}", exc) from exc
        if info is not None:
            return info
        problem = "the pull did not produce it"
        try:
            self._pull(reference)
            info = self._image(reference)
        except Exception as exc:
            problem = str(exc).strip()[:300] or type(exc).__name__
        if info is None:
            raise RuntimeUnavailable(
                f"image {reference} is not available to {self.name} and cannot be pulled: {problem}",
                hint=f"run `{self.cli} pull {reference}` where a registry is reachable, build or load "
                f"the image into {self.name} (`{self.cli} load`), or pass --image with a local image",
            )
        return info

    def _image_id(self, identity: RuntimeIdentity) -> str:
        """The local image to run for `identity`; checks it still has the same content."""
        with self._lock:
            cached = self._image_ids.get(identity.identity)
        if cached is not None:
            return cached
        digest = identity.identity.removeprefix("image:")
        candidates = [digest]
        if identity.image:
            candidates.append(f"{normalize_repository(identity.image)}@{digest}")
        for candidate in candidates:
            try:
                info = self._image(candidate)
            except Exception:
                info = None
            if info is not None:
                with self._lock:
                    self._image_ids[identity.identity] = info.id
                return info.id
        if identity.image:
            resolved = self.resolve(identity.image)
            if resolved.identity == identity.identity:
                return self._image_ids[identity.identity]
        raise RuntimeUnavailable(
            f"{self.name}: no local image has the content {digest} ({identity.image or 'no reference'})",
            hint="the image changed since the state was built; pull or load the original image",
        )

    # ------------------------------------------------------------------ Runtime port -----
    def probe(self) -> Probe:
        try:
            version = self._ping(PROBE_TIMEOUT)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            return Probe(
                self.name, False, f"{self.name}: daemon at {self.endpoint} does not answer ({detail})"
            )
        return Probe(self.name, True, f"{self.name} {version} at {self.endpoint}")

    def resolve(self, image: str | None) -> RuntimeIdentity:
        reference = image or self.default_image
        info = self._local_image(reference)
        digest = content_digest(reference, info)
        facts = self._image_facts(info.id, reference)
        identity = RuntimeIdentity(
            runtime=self.name,
            identity=f"image:{digest}",
            version=facts.version,
            description=f"{reference} ({digest})",
            image=reference,
            server_uid=facts.uid,
            server_gid=facts.gid,
        )
        with self._lock:
            self._image_ids[identity.identity] = info.id
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
        image_id = self._image_id(identity)
        mounts = (Mount(str(data_dir), PGDATA),)
        labels = {**self.labels, LABEL_ROLE: "initdb", LABEL_DATA_DIR: str(data_dir)}
        try:
            if os.geteuid() == 0 and identity.server_uid is not None:
                gid = identity.server_gid if identity.server_gid is not None else -1
                os.chown(data_dir, identity.server_uid, gid)
                os.chmod(data_dir, 0o700)
            else:
                code, out, err = self._one_shot(
                    ContainerConfig(
                        image=image_id,
                        entrypoint=("sh", "-c", f"chown postgres:postgres {PGDATA} && chmod 0700 {PGDATA}"),
                        command=(),
                        user="0",
                        labels=labels,
                        mounts=mounts,
                        network=False,
                    )
                )
                if code != 0:
                    raise RuntimeFailure(
                        f"{self.name}: cannot hand {data_dir} to the image's postgres user",
                        details={"log": (err or out)[-4000:]},
                    )
            code, out, err = self._one_shot(
                ContainerConfig(
                    image=image_id,
                    entrypoint=("initdb",),
                    command=("-D", PGDATA, "-U", "postgres", *options),
                    user="postgres",
                    labels=labels,
                    mounts=mounts,
                    network=False,
                )
            )
        except SqlrsError:
            raise
        except Exception as exc:
            raise self._failure("initdb failed", exc) from exc
        if code != 0:
            raise RuntimeFailure(f"initdb failed (exit code {code})", details={"log": (err + out)[-4000:]})

    def start(self, spec: InstanceSpec) -> str:
        image_id = self._image_id(spec.identity)
        name = container_name(spec.instance_id)
        argv: list[str] = ["-D", PGDATA, "-p", str(spec.port)]
        for key, value in spec.settings.items():
            if key not in _FIXED_SETTINGS:
                argv += ["-c", f"{key}={value}"]
        argv += ["-c", "listen_addresses=*", "-c", f"unix_socket_directories={RUN_DIR}"]
        config = ContainerConfig(
            image=image_id,
            # postgres stays PID 1 (exec); its output goes to the run dir like the native runtime's
            entrypoint=("sh", "-c", f'exec "$0" "$@" >>{RUN_DIR}/{SERVER_LOG} 2>&1', "postgres"),
            command=tuple(argv),
            user="postgres",
            name=name,
            labels={
                **self.labels,
                LABEL_ROLE: "server",
                LABEL_INSTANCE: spec.instance_id,
                LABEL_DATA_DIR: str(spec.data_dir),
                LABEL_RUN_DIR: str(spec.run_dir),
                LABEL_PORT: str(spec.port),
            },
            mounts=(
                Mount(str(spec.data_dir), PGDATA),
                Mount(str(spec.run_dir), RUN_DIR),
                Mount(str(spec.scripts_dir), SCRIPTS_DIR, read_only=True),
            ),
            ports={spec.port: ("127.0.0.1", spec.port)},
            shm_size=SHM_SIZE,
            stop_signal="SIGINT",
        )
        try:
            # Two servers on one data directory would corrupt it (each is PID 1 in its own
            # namespace, so PostgreSQL's postmaster.pid interlock cannot see the other).
            running = self._find(
                {LABEL_DATA_DIR: str(spec.data_dir), LABEL_ROLE: "server"}, running_only=True
            )
            if running:
                raise RuntimeFailure(
                    f"{self.name}: container {running[0][:12]} already runs a server on {spec.data_dir}"
                )
            stale = self._state(name)
            if stale is not None:
                if stale.running:
                    raise RuntimeFailure(f"{self.name}: container {name} is already running")
                self._remove(name)
            self._clear_stale_lock(spec.data_dir)
            container = self._create(config)
        except SqlrsError:
            raise
        except Exception as exc:
            raise self._failure(f"cannot create container {name}", exc) from exc
        try:
            self._start(container)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._remove(container)
            raise self._failure(f"cannot start container {name}", exc) from exc
        return container

    def _clear_stale_lock(self, data_dir: Path) -> None:
        """Remove the postmaster.pid a vanished container left behind.

        A killed container leaves a postmaster.pid saying `ready`, which would make the caller
        believe the new server is up before it is. The file's interlock protects nothing here:
        a containerized postmaster is PID 1 in its own namespace, so a new one would take the
        file over anyway. Only a live postgres process on this host (a native server) keeps it.
        """
        lock = data_dir / "postmaster.pid"
        info = read_postmaster_pid(data_dir)
        if info is None:
            if lock.exists():  # unreadable or half-written: stale too
                lock.unlink(missing_ok=True)
            return
        pid = info[0]
        if pid > 1 and pid_alive(pid) and _is_postgres(pid):
            raise RuntimeFailure(
                f"{self.name}: a postgres process (pid {pid}) on this host already uses {data_dir}"
            )
        lock.unlink(missing_ok=True)

    def is_running(self, spec: InstanceSpec, ref: str) -> bool:
        if not ref:
            return False
        try:
            state = self._state(ref)
        except Exception as exc:
            raise self._failure(f"cannot inspect container {ref[:12]}", exc) from exc
        return state is not None and state.running

    def stop(self, spec: InstanceSpec, ref: str, timeout: float = 60.0) -> None:
        if not ref:
            return
        try:
            # SIGINT: fast shutdown; then immediate shutdown; then kill the container.
            for signal, wait in (("SIGINT", timeout), ("SIGQUIT", 10.0), ("SIGKILL", 10.0)):
                state = self._state(ref)
                if state is None or not state.running:
                    return
                self._kill(ref, signal)
                if self._wait_exit(ref, wait) is not None:
                    return
        except SqlrsError:
            raise
        except Exception as exc:
            raise self._failure(f"cannot stop container {ref[:12]}", exc) from exc
        raise RuntimeFailure(f"{self.name}: container {ref[:12]} does not stop")

    def discard(self, spec: InstanceSpec, ref: str) -> None:
        if not ref:
            return
        try:
            self._remove(ref)
        except Exception as exc:
            raise self._failure(f"cannot remove container {ref[:12]}", exc) from exc

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
        pidfile = f"/tmp/sqlrs-exec-{uuid.uuid4().hex}.pid"
        cmd = ["sh", "-c", f'echo $$ >{pidfile}; exec "$0" "$@"', tool, *args]
        environment = {
            "PGHOST": RUN_DIR,
            "PGPORT": str(spec.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
            **(env or {}),
        }
        try:
            exec_id, frames = self._exec(ref, cmd, "postgres", environment, SCRIPTS_DIR)
        except Exception as exc:
            state = None
            with contextlib.suppress(Exception):
                state = self._state(ref)
            if state is None or not state.running:
                raise RuntimeFailure(
                    f"{self.name}: the instance's container {ref[:12]} is not running"
                ) from exc
            raise self._failure(f"cannot run {tool}", exc) from exc

        done = threading.Event()
        killed = threading.Event()

        def kill() -> None:
            if killed.is_set():
                return
            killed.set()
            try:
                _, kill_frames = self._exec(ref, ["sh", "-c", _kill_script(pidfile)], "postgres", {}, None)
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
                    raise self._failure(f"lost the output of {tool}", exc) from exc
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
        deadline = time.monotonic() + 10.0
        delay = 0.005
        while True:
            try:
                running, code = self._exec_result(exec_id)
            except Exception as exc:
                raise self._failure(f"cannot read the exit code of {tool}", exc) from exc
            if not running and code is not None:
                return code
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"{self.name}: {tool} ended but its exit code is unknown")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def tool_path(self, spec: InstanceSpec, host_path: Path) -> str:
        try:
            relative = Path(os.path.abspath(host_path)).relative_to(os.path.abspath(spec.scripts_dir))
        except ValueError:
            raise RuntimeFailure(
                f"{host_path} is not under the instance's scripts directory {spec.scripts_dir}"
            ) from None
        return SCRIPTS_DIR if str(relative) == "." else f"{SCRIPTS_DIR}/{relative.as_posix()}"

    # ------------------------------------------------------------------ housekeeping -----
    def leftovers(self, labels: Mapping[str, str | None] | None = None) -> list[str]:
        """Ids of containers sqlrs made: all of them, or those carrying `labels`."""
        wanted: dict[str, str | None] = {LABEL_ROLE: None}
        wanted.update(labels or {})
        try:
            return self._find(wanted)
        except Exception as exc:
            raise self._failure("cannot list containers", exc) from exc

    def remove_container(self, ref: str) -> None:
        """Kill and remove one container (e.g. one of `leftovers`); a missing one is fine."""
        try:
            self._remove(ref)
        except Exception as exc:
            raise self._failure(f"cannot remove container {ref[:12]}", exc) from exc
