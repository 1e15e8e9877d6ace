"""Image references and content digests: pure rules, no daemon (SPEC section 6).

The identity of a container runtime is the content digest of its image, so the same image gives
the same base states in docker and podman. These functions decide that digest from what a
runtime reports about a local image (`ImageInfo`); they never talk to a daemon.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ImageInfo:
    """What the runtime knows about a local image."""

    id: str  # "sha256:<hex>" (config digest), the same in docker and podman for the same image
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:<hex>"
    manifest_digest: str | None = None  # podman: digest of the image's own manifest


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


def qualified(reference: str) -> str:
    """`postgres:17` -> `docker.io/library/postgres:17`; a missing tag is `latest`."""
    repository = normalize_repository(reference)
    if "@" in reference:
        return f"{repository}@{reference.split('@', 1)[1]}"
    last = reference.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return f"{repository}:{tag}"


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


def image_identity(digest: str) -> str:
    """The `RuntimeIdentity.identity` of an image with content `digest`."""
    return f"image:{digest}"


def identity_digest(identity: str) -> str:
    """The content digest inside an image identity (inverse of `image_identity`)."""
    return identity.removeprefix("image:")


def local_candidates(identity: str, image: str | None) -> list[str]:
    """References under which a runtime may hold the image of `identity`: its digest (an image
    id), then `repository@digest` of the reference it was resolved from."""
    digest = identity_digest(identity)
    candidates = [digest]
    if image:
        candidates.append(f"{normalize_repository(image)}@{digest}")
    return candidates
