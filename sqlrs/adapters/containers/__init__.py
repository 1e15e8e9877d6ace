"""Container runtimes: PostgreSQL servers in docker or podman containers (SPEC section 6).

One `ContainerRuntime` (runtime.py) implements the `Runtime` port on top of a small
`ContainerBackend` protocol (backend.py) that `docker.py` and `podman.py` implement with their
SDK. Beside them: the container layout (layout.py), image-reference rules (images.py, pure),
the image cache (imagecache.py) and housekeeping of leftover containers (housekeeping.py).

The SDKs (`docker`, `podman`) are imported only by the adapter modules themselves, never by
this package, so importing `sqlrs.adapters.containers` stays cheap. Use::

    from sqlrs.adapters.containers.docker import DockerRuntime
    from sqlrs.adapters.containers.podman import PodmanRuntime

or the lazy attributes of this package (`sqlrs.adapters.containers.DockerRuntime`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlrs.adapters.containers.docker import DockerRuntime
    from sqlrs.adapters.containers.podman import PodmanRuntime

__all__ = ["DockerRuntime", "PodmanRuntime"]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":
        from sqlrs.adapters.containers.docker import DockerRuntime

        return DockerRuntime
    if name == "PodmanRuntime":
        from sqlrs.adapters.containers.podman import PodmanRuntime

        return PodmanRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
