"""What runs a request or a state: a runtime (services/instances/runtimes.py chooses it) and its
identity for an image and a PostgreSQL major (the image digest, or the native build), which every
base id embeds. Prepare, the warm pools, `POST /v1/instances`, compare, push and pull ask here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlrs.domain import roles
from sqlrs.domain.errors import RuntimeUnavailable, UsageError
from sqlrs.domain.model import State
from sqlrs.ports.postmaster import pg_major
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.runtimes import Choice, RuntimeRegistry, UsabilityCheck
from sqlrs.services.layout import Layout


class Identities:
    def __init__(self, registry: RuntimeRegistry, layout: Layout, default_image: Callable[[], str]):
        self.registry = registry
        self.layout = layout
        self.default_image = default_image  # config dbms.image

    def identity_for(self, runtime: Runtime, image: str | None, major: str | None = None) -> RuntimeIdentity:
        """What `runtime` runs for a request's image and PostgreSQL major. Without an image, a
        major picks `postgres:N` unless config dbms.image already is that major."""
        if not runtime.needs_image:
            return runtime.resolve(None, major)
        if image is None and major is not None:
            default = self.default_image()
            try:
                return runtime.resolve(default, major)
            except RuntimeUnavailable:
                return runtime.resolve(f"postgres:{major}", major)
        return runtime.resolve(image or self.default_image(), major)

    def image_check(self, image: str | None, major: str | None = None) -> tuple[str, UsabilityCheck]:
        """For `auto`: a runtime that cannot serve the request (its image; native: the major's
        binaries) is not available."""
        wanted = image or (f"postgres:{major}" if major else self.default_image())

        def can_serve(runtime: Runtime) -> None:
            if runtime.needs_image or major is not None:
                self.identity_for(runtime, image, major)  # raises RuntimeUnavailable when it cannot

        return f"{wanted} / {major}" if major else wanted, can_serve

    def choose(self, requested: str | None, image: str | None, major: str | None = None) -> Choice:
        """The runtime for a request (`requested`, else the configured one, else `auto`'s first
        that can serve the image and major)."""
        return self.registry.choose(requested, self.image_check(image, major))

    def of_state(self, state: State, image: str | None) -> tuple[Runtime, RuntimeIdentity]:
        """The runtime and identity that start instances of `state` (of the PostgreSQL major its
        data holds), checked against its base id (made for either bootstrap superuser)."""
        runtime = self.registry.get(state.runtime)
        identity = self.identity_for(runtime, image, pg_major(self.layout.abs(state.data_path)))
        if roles.superuser_of(identity.identity, roles.INITDB_OPTIONS, state.base_id) is None:
            raise UsageError(
                f"state {state.id[:12]} was not built by {identity.description}",
                hint="pass the image (and runtime) the state was prepared with",
            )
        return runtime, identity
