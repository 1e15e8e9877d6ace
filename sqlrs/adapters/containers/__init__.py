"""Container runtimes: PostgreSQL servers in docker or podman containers (SPEC section 6).

One `ContainerRuntime` (runtime.py) implements the `Runtime` port on top of a small
`ContainerBackend` protocol (backend.py) that `docker.py` and `podman.py` implement with their
SDK. Beside them: the container layout (layout.py), image-reference rules (images.py, pure),
the image cache (imagecache.py) and housekeeping of leftover containers (housekeeping.py).

The SDKs (`docker`, `podman`) are imported only by the adapter modules themselves, never by
this package, so importing `sqlrs.adapters.containers` stays cheap. Use::

    from sqlrs.adapters.containers.docker import DockerRuntime
    from sqlrs.adapters.containers.podman import PodmanRuntime

or the lazy attributes of this package (`sqlrs.adapters.containers.DockerRuntime`). `DOCKER` and
`PODMAN` register them (entry point group `sqlrs.runtimes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlrs.ports.runtime import Runtime, RuntimeContext, RuntimePlugin

if TYPE_CHECKING:
    from sqlrs.adapters.containers.docker import DockerRuntime
    from sqlrs.adapters.containers.podman import PodmanRuntime

__all__ = ["DOCKER", "PODMAN", "DockerRuntime", "PodmanRuntime"]

CONTAINER_SETTINGS = ("dbms.image",)


def _docker(context: RuntimeContext) -> Runtime:
    from sqlrs.adapters.containers.docker import DockerRuntime

    return DockerRuntime(labels=context.labels, default_image=str(context.setting("dbms.image")))


def _podman(context: RuntimeContext) -> Runtime:
    from sqlrs.adapters.containers.podman import PodmanRuntime

    return PodmanRuntime(labels=context.labels, default_image=str(context.setting("dbms.image")))


DOCKER = RuntimePlugin("docker", _docker, priority=300, settings=CONTAINER_SETTINGS,
                       description="containers of a PostgreSQL image, through the Docker Engine API")
PODMAN = RuntimePlugin("podman", _podman, priority=200, settings=CONTAINER_SETTINGS,
                       description="containers of a PostgreSQL image, through the Podman API service")


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":
        from sqlrs.adapters.containers.docker import DockerRuntime

        return DockerRuntime
    if name == "PodmanRuntime":
        from sqlrs.adapters.containers.podman import PodmanRuntime

        return PodmanRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
