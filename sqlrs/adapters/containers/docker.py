"""The docker runtime: PostgreSQL servers in Docker containers, through the `docker` SDK.

The daemon is found like the docker CLI does without contexts: `DOCKER_HOST` (and
`DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`), else unix:///var/run/docker.sock.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO, cast

import docker
import docker.errors
import docker.types
import docker.utils

from sqlrs.adapters.containers.backend import ContainerConfig, ContainerState, Frames
from sqlrs.adapters.containers.images import ImageInfo
from sqlrs.adapters.containers.layout import DEFAULT_IMAGE
from sqlrs.adapters.containers.runtime import ContainerRuntime

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT = 120


def demultiplexed(reader: BinaryIO, close: Callable[[], object]) -> Frames:
    """(stdout, stderr) chunks of a non-tty exec stream: 8-byte frame headers (stream, length)."""
    try:
        while True:
            header = reader.read(8)
            if len(header) < 8:
                return
            stream, length = struct.unpack(">BxxxL", header)
            data = reader.read(length) if length else b""
            if data:
                yield (None, data) if stream == 2 else (data, None)
            if len(data) < length:  # the stream ended mid-frame
                return
    finally:
        close()


class DockerBackend:
    """The `ContainerBackend` of the Docker Engine API, through the docker SDK."""

    name = "docker"
    cli = "docker"

    def __init__(self, base_url: str | None = None):
        self._base_url = base_url  # the daemon's API socket; None: as the docker CLI finds it
        self._client: docker.DockerClient | None = None  # made on first use
        self._client_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self._base_url:
            kwargs["base_url"] = self._base_url
        else:
            kwargs.update(docker.utils.kwargs_from_env())
            kwargs.setdefault("base_url", DEFAULT_DOCKER_HOST)
        return kwargs

    @property
    def endpoint(self) -> str:
        return str(self._client_kwargs()["base_url"])

    @property
    def client(self) -> docker.DockerClient:
        # Built lazily: the SDK asks the daemon for its API version when the client is made.
        with self._client_lock:
            if self._client is None:
                self._client = docker.DockerClient(**self._client_kwargs(), timeout=API_TIMEOUT)
            return self._client

    @property
    def _api(self) -> docker.APIClient:
        return self.client.api

    def ping(self, timeout: float) -> str:
        probe = docker.DockerClient(**self._client_kwargs(), timeout=timeout)
        try:
            probe.api.ping()
            return str(probe.api.version().get("Version", "?"))
        finally:
            probe.close()

    # -- images -------------------------------------------------------------------------------
    def image(self, reference: str) -> ImageInfo | None:
        try:
            attrs = self._api.inspect_image(reference)
        except docker.errors.NotFound:
            return None
        return ImageInfo(id=str(attrs["Id"]), repo_digests=tuple(attrs.get("RepoDigests") or ()))

    def pull(self, reference: str) -> None:
        try:
            self.client.images.pull(reference)
        except docker.errors.APIError as exc:  # the daemon's own words, not the SDK's HTTP wrapping
            raise RuntimeError(str(exc.explanation or exc)) from exc

    # -- containers ---------------------------------------------------------------------------
    def create(self, config: ContainerConfig) -> str:
        kwargs = config.create_kwargs()
        kwargs["mounts"] = [
            docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in config.mounts
        ]
        kwargs["detach"] = True
        if config.stop_signal:
            kwargs["stop_signal"] = config.stop_signal
        container = self.client.containers.create(config.image, **kwargs)
        return str(container.id)

    def start(self, container: str) -> None:
        self._api.start(container)

    def state(self, container: str) -> ContainerState | None:
        try:
            state = self._api.inspect_container(container)["State"]
        except docker.errors.NotFound:
            return None
        return ContainerState(
            running=bool(state.get("Running")) and not state.get("Restarting"),
            status=str(state.get("Status", "")),
            exit_code=state.get("ExitCode"),
        )

    def kill(self, container: str, signal: str) -> None:
        try:
            self._api.kill(container, signal=signal)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # not running
                raise

    def logs(self, container: str) -> tuple[bytes, bytes]:
        out = self._api.logs(container, stdout=True, stderr=False)
        err = self._api.logs(container, stdout=False, stderr=True)
        return cast(bytes, out), cast(bytes, err)

    def remove(self, container: str) -> None:
        try:
            self._api.remove_container(container, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc):
                raise

    def find(self, labels: Mapping[str, str | None], running_only: bool = False) -> list[str]:
        filters = {"label": [key if value is None else f"{key}={value}" for key, value in labels.items()]}
        found = self._api.containers(all=not running_only, filters=filters)
        return [str(entry["Id"]) for entry in found]

    # -- exec ---------------------------------------------------------------------------------
    def exec(
        self, container: str, cmd: Sequence[str], user: str, env: Mapping[str, str], workdir: str | None
    ) -> tuple[str, Frames]:
        created = self._api.exec_create(
            container,
            list(cmd),
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            user=user,
            environment=dict(env) or None,
            workdir=workdir,
        )
        exec_id = str(created["Id"])
        # exec_start(stream=True) as the SDK does it, but read through the response's buffered
        # reader: the SDK reads the raw socket under it and loses what that reader took in with the
        # response headers, now and then a quick command's whole output (docker/docker-py#3332)
        api: Any = self._api
        response = api._post_json(api._url("/exec/{0}/start", exec_id), stream=True,
                                  headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                                  data={"Tty": False, "Detach": False})
        api._raise_for_status(response)
        reader = response.raw._fp.fp
        api._disable_socket_timeout(reader.raw)  # a tool may print nothing for longer than API_TIMEOUT
        return exec_id, demultiplexed(reader, response.close)

    def exec_result(self, exec_id: str) -> tuple[bool, int | None]:
        info = self._api.exec_inspect(exec_id)
        code = info.get("ExitCode")
        return bool(info.get("Running")), (int(code) if code is not None else None)

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class DockerRuntime(ContainerRuntime):
    """Runs each instance in its own Docker container (see layout.py for the layout)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        default_image: str = DEFAULT_IMAGE,
        labels: Mapping[str, str] | None = None,
    ):
        super().__init__(DockerBackend(base_url), default_image=default_image, labels=labels)


__all__ = ["DockerBackend", "DockerRuntime"]
