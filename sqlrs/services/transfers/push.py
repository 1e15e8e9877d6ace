"""Pushing a state with its chain to an OCI registry (`sqlrs push`, and prepare with
`cache.remote_push`): one manifest per state tagged with its id (see `sqlrs.domain.remote` for the
format); a state whose parent is already there costs one layer, and layers the registry has (by
an ancestor's manifest) are reused.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlrs.domain import roles
from sqlrs.domain.errors import Conflict, UsageError
from sqlrs.domain.model import State
from sqlrs.domain.remote import CONFIG_MEDIA_TYPE, LayerInfo, RuntimeNotes, build_manifest, read_manifest, state_tag
from sqlrs.ports.postmaster import pg_major
from sqlrs.ports.registry import StateRegistry
from sqlrs.ports.runtime import RuntimeIdentity
from sqlrs.services.instances.identities import Identities
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.catalog import StateCatalog
from sqlrs.services.transfers.progress import TransferProgress
from sqlrs.services.transfers.registries import Registries, runtime_notes


class StatePusher:
    def __init__(self, catalog: StateCatalog, identities: Identities, registries: Registries):
        self.catalog = catalog
        self.repo = catalog.repo
        self.layout = catalog.layout
        self.locks = catalog.locks
        self.identities = identities
        self.registries = registries

    def identity_of(self, state: State, image: str | None) -> RuntimeIdentity:
        """The runtime identity that made `state`'s base, from the runtimes and images known here."""
        runtime = self.identities.registry.get(state.runtime)
        images: list[str | None] = [image] if image else [None]
        if not image and runtime.needs_image:
            images += sorted({i.image for i in self.repo.list_instances() if i.image and i.runtime == runtime.name})
        major = pg_major(self.layout.abs(state.data_path))
        for candidate in images:
            identity = self.identities.identity_for(runtime, candidate, major)
            if roles.superuser_of(identity.identity, roles.INITDB_OPTIONS, state.base_id) is not None:
                return identity
        raise UsageError(f"cannot tell which {runtime.name} image built state {state.id[:12]}",
                         hint="pass it: sqlrs push --image IMAGE ...")

    def chain_of(self, state: State) -> list[State]:
        """The state and its ancestors, base first; all must be cached here."""
        chain = [state]
        while chain[-1].parent_id is not None:
            parent = self.catalog.kept(chain[-1].parent_id)
            if parent is None:
                raise Conflict(f"state {chain[-1].parent_id[:12]}, an ancestor of {state.id[:12]}, is not cached here",
                               hint="prepare the chain again to rebuild it, then push")
            chain.append(parent)
        chain.reverse()
        return chain

    def push(self, ctx: JobContext | None, state: State, target: str | None = None,
             image: str | None = None, identity: RuntimeIdentity | None = None) -> dict[str, Any]:
        """Push `state` with its chain; layers the registry has (by an ancestor's manifest) are reused."""
        chain = self.chain_of(state)
        identity = identity or self.identity_of(state, image)
        notes = runtime_notes(identity)
        ref = self.registries.target(target, state.id)
        registry = self.registries.registry(ref)
        # the deepest ancestor the repository has already: its manifest lists the layers below it
        layers: list[LayerInfo] = []
        start = 0
        existing = ""  # the manifest's digest when the state itself is there already
        for index in range(len(chain) - 1, -1, -1):
            found = registry.manifest(state_tag(chain[index].id))
            if found is None:
                continue
            remote_chain, _ = read_manifest(found[0], f"{ref.host}/{ref.repository}:{state_tag(chain[index].id)}")
            if [layer.state_id for layer in remote_chain] == [s.id for s in chain[: index + 1]]:
                layers, start = remote_chain, index + 1
                existing = found[1] if start == len(chain) else ""
                break
        uploaded: list[str] = []
        reused = [layer.digest for layer in layers]
        digest = ""
        if start < len(chain):
            work = self.layout.tmp_dir / f"push-{secrets.token_hex(4)}"
            work.mkdir()
            try:
                for position in range(start, len(chain)):
                    current = chain[position]
                    parent = chain[position - 1] if position > 0 else None
                    layer, sent = self._push_layer(ctx, registry, current, parent, work)
                    layers.append(layer)
                    (uploaded if sent else reused).append(layer.digest)
                    digest = self._put_manifest(registry, layers, notes, state_tag(current.id))
                    if ctx is not None:
                        ctx.emit("log", stream="engine", text=f"pushed state {current.id[:12]} ({current.source}) "
                                                                f"to {ref.host}/{ref.repository}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
        if ref.reference != state_tag(state.id) or not (digest or existing):
            digest = self._put_manifest(registry, layers, notes, ref.reference)
        digest = digest or existing
        return {"state_id": state.id, "reference": str(ref), "digest": digest,
                "pushed": f"{ref.host}/{ref.repository}@{digest}", "uploaded": uploaded, "reused": reused,
                "layers": len(layers)}

    def _push_layer(self, ctx: JobContext | None, registry: StateRegistry, state: State, parent: State | None,
                    work: Path) -> tuple[LayerInfo, bool]:
        blob = work / f"{state.id}.tar.zst"
        if ctx is not None:
            ctx.emit("log", stream="engine", text=f"packing state {state.id[:12]} ({state.source})")
        # eviction and `rm` take a state's lock before deleting it: hold them while reading. A lock
        # held already is the prepare that just built the state (remote_push), which keeps it too.
        held = [lock for lock in (self.locks.get(s.id) for s in (state, parent) if s is not None)
                if lock.acquire(blocking=False)]
        try:
            digest, size, _ = self.registries.layers.write_layer(self.layout.abs(state.data_path),
                                          self.layout.abs(parent.data_path) if parent else None, blob)
        finally:
            for lock in held:
                lock.release()
        sent = registry.push_blob(blob, digest, size,
                                  TransferProgress(ctx, direction="push", state_id=state.id, digest=digest))
        blob.unlink(missing_ok=True)
        span = tuple((u.id, u.step_hash, u.kind.value, u.source) for u in self.repo.span_of(state.id))
        layer = LayerInfo(state_id=state.id, parent_id=state.parent_id, base_id=state.base_id, kind=state.kind.value,
                          step_hash=state.step_hash, source=state.source, size_bytes=state.size_bytes,
                          build_seconds=state.build_seconds, digest=digest, blob_size=size, span=span)
        return layer, sent

    def _put_manifest(self, registry: StateRegistry, layers: list[LayerInfo], notes: RuntimeNotes,
                      reference: str) -> str:
        config = json.dumps({"states": [layer.descriptor()["annotations"] for layer in layers],
                             "runtime": notes.annotations()}, sort_keys=True).encode()
        descriptor = registry.push_bytes(config, CONFIG_MEDIA_TYPE)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return registry.put_manifest(reference, build_manifest(layers, notes, descriptor, created))
