"""Reaching OCI registries (sqlrs/ports/registry.py): the remote cache configured here
(`cache.remote`), a registry client per repository (opened once), and whether a chain read from a
registry can be pulled by this engine (`check_compatible`). Push and pull (push.py, pull.py) and
prepare's remote cache (remote_cache.py) share them; the artifact format is sqlrs.domain.remote.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from sqlrs.domain import keys, roles
from sqlrs.domain.errors import UsageError
from sqlrs.domain.remote import (
    Incompatible,
    LayerInfo,
    RegistryError,
    RemoteRef,
    RuntimeNotes,
    chain_adds_up,
    parse_ref,
    postgres_major,
    state_tag,
)
from sqlrs.ports.registry import RegistryOpener, StateLayers, StateRegistry
from sqlrs.ports.runtime import RuntimeIdentity


class Registries:
    def __init__(self, open_registry: RegistryOpener, layers: StateLayers, setting: Callable[[str], Any]):
        self.open_registry = open_registry
        self.layers = layers  # the layer format (packing a state as a diff of its parent, applying one)
        self.setting = setting  # config.get: cache.remote, cache.remote_insecure, cache.remote_push
        self._opened: dict[str, StateRegistry] = {}
        self._guard = threading.Lock()

    def cache_ref(self) -> RemoteRef | None:
        """The remote cache's repository (`cache.remote`), or None when none is configured."""
        value = str(self.setting("cache.remote") or "").strip()
        return parse_ref(value, "cache.remote") if value else None

    def registry(self, ref: RemoteRef) -> StateRegistry:
        key = f"{ref.host}/{ref.repository}|{self.setting('cache.remote_insecure')}"
        with self._guard:
            registry = self._opened.get(key)
            if registry is None:
                registry = self._opened[key] = self.open_registry(ref.with_tag("latest"))
        return registry

    def target(self, text: str | None, state_id: str) -> RemoteRef:
        if text:
            ref = parse_ref(text)
            if ref.digest:
                raise UsageError(f"cannot push to a digest ({text})", hint="push to HOST/REPO[:TAG]; the registry "
                                                                            "computes the digest")
            return ref if ref.tag else ref.with_tag(state_tag(state_id))
        cache = self.cache_ref()
        if cache is None:
            raise UsageError("no registry to push to", hint="give a reference (HOST[:PORT]/REPO[:TAG]) or set one "
                                                            "for good: sqlrs config set cache.remote HOST/REPO")
        return cache.with_tag(state_tag(state_id))

    @property
    def push_built(self) -> bool:
        """Whether prepare pushes the states it builds to the remote cache (`cache.remote_push`)."""
        return bool(self.setting("cache.remote_push"))


def runtime_notes(identity: RuntimeIdentity) -> RuntimeNotes:
    """What a manifest says about the PostgreSQL a chain was built on."""
    return RuntimeNotes(identity.runtime, identity.identity, identity.description, identity.version,
                        identity.image)


def check_compatible(where: str, chain: list[LayerInfo], notes: RuntimeNotes, identity: RuntimeIdentity) -> None:
    """Refuse a chain built on another PostgreSQL or runtime; check its ids add up."""
    local_bases = {roles.base_id(identity.identity, roles.INITDB_OPTIONS, name) for name in roles.SUPERUSERS}
    if chain[0].state_id not in local_bases or chain[0].base_id != chain[0].state_id:
        theirs, ours = postgres_major(notes.version), postgres_major(identity.version)
        if theirs and ours and theirs != ours:
            why = f"it was built on PostgreSQL {theirs} and this engine runs PostgreSQL {ours}"
        else:
            why = (f"it was built on {notes.version} ({notes.runtime}: {notes.description}) and this engine "
                   f"runs {identity.version} ({identity.runtime}: {identity.description})")
        raise Incompatible(
            f"{where} cannot be pulled here: {why}",
            hint="states are shared only between engines with the same PostgreSQL build (the same image "
                 "digest, or the same native binaries): choose it with --runtime/--image",
            details={"remote": {"runtime": notes.runtime, "version": notes.version,
                                "identity": notes.identity, "description": notes.description},
                     "local": {"runtime": identity.runtime, "version": identity.version,
                               "identity": identity.identity, "description": identity.description}})
    for parent, child in itertools.pairwise(chain):
        if not chain_adds_up(parent.state_id, child, keys.state_id):
            raise RegistryError(f"{where}: state {child.state_id[:12]} does not follow from its parent and step",
                                hint="the manifest was not made by sqlrs push or was altered")
        if child.base_id != chain[0].state_id:
            raise RegistryError(f"{where}: state {child.state_id[:12]} names another base")
