"""Which local image runs an identity, and what is inside an image: asked once, remembered.

Resolving an image costs a daemon round trip for the image and a throwaway container for its
PostgreSQL version and postgres uid/gid; both answers are kept per image id (facts) and per
identity (the local image id to run) for the life of the runtime adapter.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import attrs

from sqlrs.adapters.containers import layout
from sqlrs.adapters.containers.backend import ContainerBackend, failure, one_shot
from sqlrs.adapters.containers.images import (
    ImageInfo,
    content_digest,
    identity_digest,
    image_identity,
    local_candidates,
)
from sqlrs.domain.errors import RuntimeUnavailable, SqlrsError
from sqlrs.ports.runtime import RuntimeIdentity

FACTS_TIMEOUT = 120.0


@attrs.frozen
class ImageFacts:
    version: str  # "PostgreSQL 16.14"
    uid: int
    gid: int


def parse_facts(code: int, out: str, err: str, reference: str) -> ImageFacts:
    """The facts from the output of `layout.FACTS_SCRIPT`; RuntimeUnavailable when the image
    does not look like a PostgreSQL image."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if code != 0 or len(lines) < 3 or not lines[1].isdigit() or not lines[2].isdigit():
        raise RuntimeUnavailable(
            f"image {reference} does not look like a PostgreSQL image "
            f"(`{layout.FACTS_SCRIPT}` exited {code}: {(err or out).strip()[-500:]})",
            hint="use an image following the official postgres image's contract "
            "(postgres binaries on PATH, a postgres user), e.g. postgres:17",
        )
    version = lines[0].replace("postgres (PostgreSQL)", "PostgreSQL")
    return ImageFacts(version=version, uid=int(lines[1]), gid=int(lines[2]))


class ImageCache:
    """Images of one backend: resolving references to identities and identities to images."""

    def __init__(self, backend: ContainerBackend, labels: Mapping[str, str]):
        self._backend = backend
        self._labels = labels  # the runtime's extra labels, also on inspect containers
        self._facts: dict[str, ImageFacts] = {}  # image id -> facts, discovered once
        self._image_ids: dict[str, str] = {}  # identity -> local image id
        self._lock = threading.Lock()

    def resolve(self, reference: str) -> RuntimeIdentity:
        """The identity of the image `reference` (pulled when missing and pullable)."""
        backend = self._backend
        info = self.local_image(reference)
        digest = content_digest(reference, info)
        facts = self.facts(info.id, reference)
        identity = RuntimeIdentity(
            runtime=backend.name,
            identity=image_identity(digest),
            version=facts.version,
            description=f"{reference} ({digest})",
            image=reference,
            server_uid=facts.uid,
            server_gid=facts.gid,
        )
        with self._lock:
            self._image_ids[identity.identity] = info.id
        return identity

    def facts(self, image_id: str, reference: str) -> ImageFacts:
        """postgres version and the postgres user's uid/gid, asked once per image id."""
        with self._lock:
            cached = self._facts.get(image_id)
        if cached is not None:
            return cached
        try:
            code, out, err = one_shot(self._backend, layout.facts_config(image_id, self._labels), FACTS_TIMEOUT)
        except SqlrsError:
            raise
        except Exception as exc:
            raise failure(self._backend, f"cannot inspect image {reference}", exc) from exc
        facts = parse_facts(code, out, err, reference)
        with self._lock:
            self._facts[image_id] = facts
        return facts

    def local_image(self, reference: str) -> ImageInfo:
        """The image, pulled when it is missing and the runtime can pull it."""
        backend = self._backend
        try:
            info = backend.image(reference)
        except SqlrsError:
            raise
        except Exception as exc:
            raise failure(backend, f"cannot inspect image {reference}", exc) from exc
        if info is not None:
            return info
        problem = "the pull did not produce it"
        try:
            backend.pull(reference)
            info = backend.image(reference)
        except Exception as exc:
            problem = str(exc).strip()[:300] or type(exc).__name__
        if info is None:
            name, cli = backend.name, backend.cli
            raise RuntimeUnavailable(
                f"image {reference} is not available to {name} and cannot be pulled: {problem}",
                hint=f"run `{cli} pull {reference}` where a registry is reachable, build or load "
                f"the image into {name} (`{cli} load`), or pass --image with a local image",
            )
        return info

    def image_id(self, identity: RuntimeIdentity) -> str:
        """The local image to run for `identity`; checks it still has the same content."""
        with self._lock:
            cached = self._image_ids.get(identity.identity)
        if cached is not None:
            return cached
        for candidate in local_candidates(identity.identity, identity.image):
            try:
                info = self._backend.image(candidate)
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
            f"{self._backend.name}: no local image has the content {identity_digest(identity.identity)} "
            f"({identity.image or 'no reference'})",
            hint="the image changed since the state was built; pull or load the original image",
        )
