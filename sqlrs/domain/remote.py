"""States as OCI artifacts: references, media types, annotations and the errors of remote caches.

A state is pushed as one OCI image manifest per kept state of its chain, tagged with the state
id. The manifest of a state lists one layer per kept state from the base: each layer is the
*diff* of its state against the kept state before it (the base's layer is its whole data
directory), as a tar compressed with zstd. Two chains that share a prefix share those layers'
blobs in the registry, and a state whose parent is already there costs one new layer to push.
The steps between two kept states that were not kept (domain/checkpoints.py) travel as the
layer's *span*: their ids and step digests, so that the chain of ids still adds up.

Pure: no I/O. The registry client is an adapter behind `sqlrs.ports.registry`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import attrs

from sqlrs.domain.errors import SqlrsError, UsageError

ARTIFACT_TYPE = "application/vnd.sqlrs.state.v1"
CONFIG_MEDIA_TYPE = "application/vnd.sqlrs.state.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.sqlrs.state.diff.v1.tar+zstd"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"

# annotation keys (reverse-DNS, as the OCI image spec asks)
A_STATE = "dev.sqlrs.state.id"
A_PARENT = "dev.sqlrs.state.parent"
A_BASE = "dev.sqlrs.state.base"
A_KIND = "dev.sqlrs.step.kind"
A_STEP = "dev.sqlrs.step.digest"
A_SOURCE = "dev.sqlrs.step.source"
A_SIZE = "dev.sqlrs.state.size"
A_BUILD_SECONDS = "dev.sqlrs.state.build_seconds"
A_SPAN = "dev.sqlrs.state.span"  # JSON [[state id, step digest, kind, source], ...]: unkept states before it
A_PG_VERSION = "dev.sqlrs.postgres.version"
A_PG_MAJOR = "dev.sqlrs.postgres.major"
A_RUNTIME = "dev.sqlrs.runtime"
A_RUNTIME_IDENTITY = "dev.sqlrs.runtime.identity"
A_RUNTIME_DESCRIPTION = "dev.sqlrs.runtime.description"
A_RUNTIME_IMAGE = "dev.sqlrs.runtime.image"
A_CREATED = "org.opencontainers.image.created"

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class RegistryError(SqlrsError):
    """The registry could not be reached or refused a request."""

    code = "registry_error"
    http_status = 502


class RegistryUnauthorized(RegistryError):
    """The registry wants credentials, or refused the ones given."""

    code = "registry_unauthorized"
    http_status = 502


class CorruptBlob(RegistryError):
    """A downloaded blob does not match its digest or size: nothing of it is kept."""

    code = "corrupt_blob"


class RemoteNotFound(RegistryError):
    code = "not_found"
    http_status = 404


class LayerError(ValueError):
    """The blob is not a sqlrs layer: not zstd, not tar, or paths that leave the data directory."""


class Incompatible(SqlrsError):
    """A remote state was built by another PostgreSQL or runtime than the local engine's."""

    code = "incompatible_state"
    http_status = 409


@attrs.frozen
class RemoteRef:
    """`HOST[:PORT]/REPO[:TAG|@DIGEST]`: where a state lives in a registry."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """The tag or digest to ask the registry for."""
        return self.digest or self.tag or "latest"

    @property
    def loopback(self) -> bool:
        hostname = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0] + "]"
        return hostname in LOOPBACK_HOSTS

    def with_tag(self, tag: str) -> RemoteRef:
        return RemoteRef(self.host, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.digest:
            return f"{text}@{self.digest}"
        return f"{text}:{self.tag}" if self.tag else text


def parse_ref(text: str, what: str = "reference") -> RemoteRef:
    """Parse `HOST[:PORT]/REPO[:TAG|@sha256:...]`; the host is never implied (no docker.io)."""
    value = text.strip()
    hint = "give HOST[:PORT]/REPO[:TAG], e.g. 127.0.0.1:5000/team/states:sakila"
    if "/" not in value:
        raise UsageError(f"invalid {what} {text!r}: no registry host", hint=hint)
    host, rest = value.split("/", 1)
    digest = tag = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UsageError(f"invalid {what} {text!r}: digest must be sha256:<64 hex>", hint=hint)
    elif ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid {what} {text!r}: bad tag {tag!r}", hint=hint)
    if not host or not _REPO_RE.match(rest):
        raise UsageError(f"invalid {what} {text!r}: repository names are lowercase a-z, 0-9, '.', '_', '-', '/'",
                         hint=hint)
    return RemoteRef(host, rest, tag, digest)


def state_tag(state_id: str) -> str:
    """The tag a state is pushed under in the remote cache: its id (64 hex, a valid OCI tag)."""
    return state_id


def postgres_major(version: str) -> str:
    """'PostgreSQL 16.4 (Debian ...)' -> '16'; '' when it can't tell."""
    match = re.search(r"(\d+)(?:\.\d+)?", version)
    return match.group(1) if match else ""


@attrs.frozen
class LayerInfo:
    """One state of a pushed chain, as its layer's annotations tell it."""

    state_id: str
    parent_id: str | None
    base_id: str
    kind: str
    step_hash: str | None
    source: str
    size_bytes: int
    build_seconds: float
    digest: str  # the layer blob
    blob_size: int
    # the unkept states between the parent and this state, in chain order: (id, step digest, kind, source)
    span: tuple[tuple[str, str, str, str], ...] = ()

    def descriptor(self) -> dict[str, Any]:
        annotations = {A_STATE: self.state_id, A_BASE: self.base_id, A_KIND: self.kind, A_SOURCE: self.source,
                       A_SIZE: str(self.size_bytes), A_BUILD_SECONDS: str(self.build_seconds)}
        if self.parent_id:
            annotations[A_PARENT] = self.parent_id
        if self.step_hash:
            annotations[A_STEP] = self.step_hash
        if self.span:
            annotations[A_SPAN] = json.dumps([list(entry) for entry in self.span], separators=(",", ":"))
        return {"mediaType": LAYER_MEDIA_TYPE, "digest": self.digest, "size": self.blob_size,
                "annotations": annotations}

    @classmethod
    def from_descriptor(cls, descriptor: dict[str, Any]) -> LayerInfo:
        notes = descriptor.get("annotations") or {}
        try:
            if descriptor.get("mediaType") != LAYER_MEDIA_TYPE:
                raise ValueError(f"layer media type {descriptor.get('mediaType')!r}")
            if not _DIGEST_RE.match(str(descriptor["digest"])):
                raise ValueError(f"layer digest {descriptor['digest']!r}")
            return cls(state_id=notes[A_STATE], parent_id=notes.get(A_PARENT) or None, base_id=notes[A_BASE],
                       kind=notes[A_KIND], step_hash=notes.get(A_STEP) or None, source=notes.get(A_SOURCE, ""),
                       size_bytes=int(notes.get(A_SIZE, 0)), build_seconds=float(notes.get(A_BUILD_SECONDS, 0)),
                       digest=descriptor["digest"], blob_size=int(descriptor["size"]),
                       span=_span(notes.get(A_SPAN)))
        except (KeyError, ValueError, TypeError) as exc:
            raise RegistryError(f"not a sqlrs state layer: {exc}",
                                hint="push states with `sqlrs push`; other artifacts cannot be pulled") from None


def _span(text: str | None) -> tuple[tuple[str, str, str, str], ...]:
    if not text:
        return ()
    entries = json.loads(text)
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 4 and all(isinstance(f, str)
                                                                                          for f in e)
                                                for e in entries):
        raise ValueError("span annotation is not a list of [id, step, kind, source]")
    return tuple((e[0], e[1], e[2], e[3]) for e in entries)


def chain_adds_up(parent_id: str, layer: LayerInfo, state_id: Callable[[str, str], str]) -> bool:
    """Does `layer` follow from the state `parent_id` through its span and its own step?
    (`state_id`: keys.state_id, passed in so that this module stays free of hashing rules.)"""
    current = parent_id
    for unkept_id, step, _kind, _source in layer.span:
        if state_id(current, step) != unkept_id:
            return False
        current = unkept_id
    return layer.step_hash is not None and state_id(current, layer.step_hash) == layer.state_id


@attrs.frozen
class RuntimeNotes:
    """What the state's base was built with: a state is pulled only into the same."""

    runtime: str
    identity: str
    description: str
    version: str
    image: str | None = None

    def annotations(self) -> dict[str, str]:
        notes = {A_RUNTIME: self.runtime, A_RUNTIME_IDENTITY: self.identity, A_RUNTIME_DESCRIPTION: self.description,
                 A_PG_VERSION: self.version, A_PG_MAJOR: postgres_major(self.version)}
        if self.image:
            notes[A_RUNTIME_IMAGE] = self.image
        return notes

    @classmethod
    def from_annotations(cls, notes: dict[str, str]) -> RuntimeNotes:
        return cls(notes.get(A_RUNTIME, "?"), notes.get(A_RUNTIME_IDENTITY, ""),
                   notes.get(A_RUNTIME_DESCRIPTION, "?"), notes.get(A_PG_VERSION, "?"),
                   notes.get(A_RUNTIME_IMAGE) or None)


def build_manifest(chain: list[LayerInfo], runtime: RuntimeNotes, config: dict[str, Any],
                   created: str) -> dict[str, Any]:
    """The OCI image manifest of the chain's last state."""
    last = chain[-1]
    annotations = {A_STATE: last.state_id, A_BASE: last.base_id, A_SIZE: str(last.size_bytes), A_CREATED: created,
                   A_KIND: last.kind, **runtime.annotations()}
    if last.parent_id:
        annotations[A_PARENT] = last.parent_id
    if last.step_hash:
        annotations[A_STEP] = last.step_hash
    return {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE,
            "config": config, "layers": [layer.descriptor() for layer in chain], "annotations": annotations}


def read_manifest(manifest: dict[str, Any], where: str) -> tuple[list[LayerInfo], RuntimeNotes]:
    """The chain and runtime a manifest describes; RegistryError when it is not a sqlrs state."""
    if manifest.get("artifactType") != ARTIFACT_TYPE and \
            (manifest.get("config") or {}).get("mediaType") != CONFIG_MEDIA_TYPE:
        raise RegistryError(f"{where} is not a sqlrs state (artifact type {manifest.get('artifactType')!r})",
                            hint="pull references that `sqlrs push` made")
    chain = [LayerInfo.from_descriptor(layer) for layer in manifest.get("layers") or []]
    if not chain:
        raise RegistryError(f"{where} has no layers")
    for parent, child in itertools.pairwise(chain):
        if child.parent_id != parent.state_id:
            raise RegistryError(f"{where}: layer of state {child.state_id[:12]} does not follow {parent.state_id[:12]}")
    if chain[0].parent_id is not None:
        raise RegistryError(f"{where}: the chain does not start at a base state")
    return chain, RuntimeNotes.from_annotations(manifest.get("annotations") or {})
