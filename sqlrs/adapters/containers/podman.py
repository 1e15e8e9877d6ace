"""The podman runtime: PostgreSQL servers in Podman containers, through the `podman` SDK.

It talks to the Podman API service (`podman system service`), found at `CONTAINER_HOST`, else
unix:///run/podman/podman.sock for root, else $XDG_RUNTIME_DIR/podman/podman.sock. The SDK's
high-level models cover creation; the rest uses its API client directly (exec streams with
exit codes, logs split by stream, removal without the default 10 s stop timeout).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import podman
import podman.errors

from sqlrs.adapters.containers.backend import ContainerConfig, ContainerState, Frames
from sqlrs.adapters.containers.images import ImageInfo, qualified
from sqlrs.adapters.containers.layout import DEFAULT_IMAGE
from sqlrs.adapters.containers.runtime import ContainerRuntime

ROOT_SOCKET = "unix:///run/podman/podman.sock"

_SIGNALS = {"SIGINT": 2, "SIGQUIT": 3, "SIGKILL": 9, "SIGTERM": 15}


def default_podman_url() -> str:
    configured = os.environ.get("CONTAINER_HOST")
    if configured:
        return configured
    if os.geteuid() == 0:
        return ROOT_SOCKET
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return f"unix://{runtime_dir}/podman/podman.sock"


def _read_exact(raw: Any, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = raw.read(size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _stream_frames(response: Any) -> Frames:
    """(stdout, stderr) chunks of a multiplexed (non-tty) attach stream, as they come."""
    raw = response.raw
    try:
        while True:
            header = _read_exact(raw, 8)
            if len(header) < 8:
                return
            kind, length = struct.unpack(">BxxxL", header)
            if not length:
                continue
            payload = _read_exact(raw, length)
            if kind == 2:
                yield None, payload
            else:
                yield payload, None
    finally:
        response.close()


def _split_frames(content: bytes) -> tuple[bytes, bytes]:
    out: list[bytes] = []
    err: list[bytes] = []
    index = 0
    while len(content) - index >= 8:
        kind, length = struct.unpack_from(">BxxxL", content, index)
        payload = content[index + 8 : index + 8 + length]
        (err if kind == 2 else out).append(payload)
        index += 8 + length
    return b"".join(out), b"".join(err)


class PodmanBackend:
    """The `ContainerBackend` of the Podman API service, through the podman SDK."""

    name = "podman"
    cli = "podman"

    def __init__(self, base_url: str | None = None):
        self._base_url = base_url  # the service's API socket; None: `default_podman_url()`
        self._client: podman.PodmanClient | None = None  # made on first use
        self._client_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._base_url or default_podman_url()

    @property
    def client(self) -> podman.PodmanClient:
        with self._client_lock:
            if self._client is None:
                # No client-wide timeout: exec streams of long psql runs must not time out.
                self._client = podman.PodmanClient(base_url=self.endpoint)
            return self._client

    @property
    def _api(self) -> Any:
        return self.client.api

    def ping(self, timeout: float) -> str:
        probe = podman.PodmanClient(base_url=self.endpoint, timeout=timeout)
        try:
            try:
                response = probe.api.get("/_ping")
            except podman.errors.APIError as exc:
                raise ConnectionError(str(exc.__cause__ or exc)) from exc
            if not response.ok:
                raise ConnectionError(f"/_ping answered HTTP {response.status_code}")
            # the ping's headers carry the version: `/version` costs ~0.3 s on podman 4
            return str(
                response.headers.get("Libpod-API-Version") or response.headers.get("API-Version") or "?"
            )
        finally:
            probe.close()

    # -- images -------------------------------------------------------------------------------
    def image(self, reference: str) -> ImageInfo | None:
        try:
            image = self.client.images.get(reference)
        except podman.errors.ImageNotFound:
            return None
        attrs = image.attrs
        image_id = str(attrs["Id"])
        if not image_id.startswith("sha256:"):
            image_id = "sha256:" + image_id
        return ImageInfo(
            id=image_id,
            repo_digests=tuple(attrs.get("RepoDigests") or ()),
            manifest_digest=attrs.get("Digest"),
        )

    def pull(self, reference: str) -> None:
        # Short names mean Docker Hub, as for docker (podman would need registries.conf aliases).
        response = self._api.post("/images/pull", params={"reference": qualified(reference), "quiet": True})
        response.raise_for_status()
        for line in response.text.splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and report.get("error"):
                raise RuntimeError(str(report["error"]))

    # -- containers ---------------------------------------------------------------------------
    def create(self, config: ContainerConfig) -> str:
        kwargs = config.create_kwargs()
        kwargs["mounts"] = [
            {"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only}
            for m in config.mounts
        ]
        if config.stop_signal:
            kwargs["stop_signal"] = _SIGNALS.get(config.stop_signal, config.stop_signal)
        container = self.client.containers.create(config.image, **kwargs)
        return str(container.id)

    def start(self, container: str) -> None:
        self._api.post(f"/containers/{container}/start").raise_for_status()

    def state(self, container: str) -> ContainerState | None:
        response = self._api.get(f"/containers/{container}/json")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        state = response.json().get("State") or {}
        return ContainerState(
            running=bool(state.get("Running")) and not state.get("Restarting"),
            status=str(state.get("Status", "")),
            exit_code=state.get("ExitCode"),
        )

    def kill(self, container: str, signal: str) -> None:
        response = self._api.post(f"/containers/{container}/kill", params={"signal": signal})
        if response.status_code in (404, 409):  # gone, or not running
            return
        response.raise_for_status()

    def logs(self, container: str) -> tuple[bytes, bytes]:
        response = self._api.get(f"/containers/{container}/logs", params={"stdout": True, "stderr": True})
        response.raise_for_status()
        return _split_frames(response.content)

    def remove(self, container: str) -> None:
        # timeout=0: no graceful stop first (a running server is stopped by `stop` beforehand)
        response = self._api.delete(
            f"/containers/{container}", params={"force": True, "volumes": True, "timeout": 0}
        )
        if response.status_code == 404:
            return
        response.raise_for_status()

    def find(self, labels: Mapping[str, str | None], running_only: bool = False) -> list[str]:
        filters = {"label": [key if value is None else f"{key}={value}" for key, value in labels.items()]}
        response = self._api.get(
            "/containers/json", params={"all": not running_only, "filters": json.dumps(filters)}
        )
        response.raise_for_status()
        return [str(entry["Id"]) for entry in response.json() or []]

    # -- exec ---------------------------------------------------------------------------------
    def exec(
        self, container: str, cmd: Sequence[str], user: str, env: Mapping[str, str], workdir: str | None
    ) -> tuple[str, Frames]:
        body: dict[str, Any] = {
            "AttachStdin": False,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "Cmd": list(cmd),
            "User": user,
            "Env": [f"{key}={value}" for key, value in env.items()],
        }
        if workdir:
            body["WorkingDir"] = workdir
        created = self._api.post(f"/containers/{container}/exec", data=json.dumps(body))
        created.raise_for_status()
        exec_id = str(created.json()["Id"])
        started = self._api.post(
            f"/exec/{exec_id}/start", data=json.dumps({"Detach": False, "Tty": False}), stream=True
        )
        started.raise_for_status()
        return exec_id, _stream_frames(started)

    def exec_result(self, exec_id: str) -> tuple[bool, int | None]:
        response = self._api.get(f"/exec/{exec_id}/json")
        response.raise_for_status()
        info = response.json()
        code = info.get("ExitCode")
        return bool(info.get("Running")), (int(code) if code is not None else None)

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class PodmanRuntime(ContainerRuntime):
    """Runs each instance in its own Podman container (see layout.py for the layout)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        default_image: str = DEFAULT_IMAGE,
        labels: Mapping[str, str] | None = None,
    ):
        super().__init__(PodmanBackend(base_url), default_image=default_image, labels=labels)


__all__ = ["PodmanBackend", "PodmanRuntime", "default_podman_url", "qualified"]
