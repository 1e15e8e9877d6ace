"""The `StateRegistry` port: an OCI distribution registry holding pushed states (one repository).

The remote cache stores states as OCI artifacts (see `sqlrs.domain.remote`): blobs (layers, the
config) addressed by digest, and manifests addressed by tag or digest. The service decides what
to push and pull; the adapter only moves bytes and checks them:

- blobs travel between the registry and files, streamed, never whole in memory;
- an interrupted transfer is retried and resumed where the registry allows it (chunked upload
  sessions, ranged downloads);
- a downloaded blob is verified against its digest and size before `fetch_blob` returns; a
  mismatch raises `CorruptBlob` and leaves nothing at the target.

Errors are `RegistryError` (unreachable, refused), `RegistryUnauthorized` (credentials missing or
wrong) and `CorruptBlob`, all from `sqlrs.domain.remote`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlrs.domain.remote import RemoteRef

# called with (bytes done, bytes total) while a blob moves
Progress = Callable[[int, int], None]


class StateRegistry(Protocol):
    """One repository of one registry."""

    ref: RemoteRef

    def manifest(self, reference: str) -> tuple[dict[str, Any], str] | None:
        """The manifest under a tag or digest and its digest; None when there is none."""
        ...

    def has_manifest(self, reference: str) -> bool:
        """Whether a tag or digest exists (one HEAD request)."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    def push_blob(self, path: Path, digest: str, size: int, progress: Progress) -> bool:
        """Upload the file at `path` (whose sha256 digest and size the caller computed) unless the
        registry has it already. True when bytes were uploaded."""
        ...

    def push_bytes(self, data: bytes, media_type: str) -> dict[str, Any]:
        """Upload a small blob (a config); return its descriptor."""
        ...

    def fetch_blob(self, digest: str, size: int, target: Path, progress: Progress) -> None:
        """Download a blob to `target` (which must not exist), verified; CorruptBlob otherwise."""
        ...

    def put_manifest(self, reference: str, manifest: dict[str, Any]) -> str:
        """Store a manifest under a tag (or its own digest); return its digest."""
        ...


class StateLayers(Protocol):
    """The layer format of pushed states: a state's files as a diff against its parent."""

    def write_layer(self, state_dir: Path, parent_dir: Path | None, out: Path) -> tuple[str, int, int]:
        """Write the layer of `state_dir` (against `parent_dir`, or whole) to `out`; return
        (sha256 digest "sha256:...", compressed size, number of entries)."""
        ...

    def apply_layer(self, blob: Path, target: Path, uid: int | None, gid: int | None) -> int:
        """Apply a layer to `target` (empty for a base, else a clone of the parent state), files
        owned by `uid`/`gid` when the engine runs as root; return the number of entries. Raises
        `sqlrs.domain.remote.LayerError` for a blob that is not a valid layer."""
        ...


# how the engine opens a repository: cache.remote and credentials are the adapter's business
RegistryOpener = Callable[[RemoteRef], StateRegistry]
