"""Pulling a state from an OCI registry (`sqlrs pull`, and prepare's remote cache): read its
manifest, check that the chain was built on this engine's PostgreSQL (the base id embeds the
runtime identity: image digest or native build) and materialize each missing state of the chain
like a build keeps one: a clone of the parent (or an empty volume for the base) under store/tmp,
the layer applied, then published by the catalog (sync, rename, metadata row). Blobs are verified
before anything is applied; a crash or a bad blob leaves nothing visible (store/tmp is cleaned by
the next engine start).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from typing import Any

from sqlrs.domain.errors import Conflict, RuntimeUnavailable, UsageError
from sqlrs.domain.model import State, StateKind, Task, TaskStatus, UnkeptState
from sqlrs.domain.remote import (
    CorruptBlob,
    Incompatible,
    LayerError,
    LayerInfo,
    RemoteNotFound,
    RuntimeNotes,
    parse_ref,
    postgres_major,
    read_manifest,
    state_tag,
)
from sqlrs.ports.clock import Clock
from sqlrs.ports.registry import StateRegistry
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.faults import crash_point
from sqlrs.services.instances.identities import Identities
from sqlrs.services.jobs import JobContext
from sqlrs.services.states.catalog import Finished, StateCatalog
from sqlrs.services.transfers.progress import TransferProgress
from sqlrs.services.transfers.registries import Registries, check_compatible


class StatePuller:
    def __init__(self, catalog: StateCatalog, identities: Identities, registries: Registries, clock: Clock,
                 after_pull: Callable[[JobContext, State], None] = lambda ctx, state: None):
        self.catalog = catalog
        self.store = catalog.store
        self.layout = catalog.layout
        self.locks = catalog.locks
        self.identities = identities
        self.registries = registries
        self.clock = clock
        self.after_pull = after_pull  # e.g. evict other states when the cache is over its bounds

    def pull(self, ctx: JobContext | None, text: str, runtime_name: str | None, image: str | None) -> dict[str, Any]:
        """Pull the state at `text` (HOST/REPO:TAG, or a state id in the remote cache).

        With no runtime (or image) asked for, the state's own runtime (and image) is used when it
        is available here, so `sqlrs pull REF` just works on an engine that can run it."""
        if "/" not in text and all(c in "0123456789abcdef" for c in text) and len(text) == 64:
            cache = self.registries.cache_ref()
            if cache is None:
                raise UsageError("a state id names a state of the remote cache, and cache.remote is not set",
                                 hint="give a reference HOST[:PORT]/REPO:TAG, or set cache.remote")
            ref = cache.with_tag(state_tag(text))
        else:
            ref = parse_ref(text)
        registry = self.registries.registry(ref)
        found = registry.manifest(ref.reference)
        if found is None:
            raise RemoteNotFound(f"{ref} is not in the registry", hint="push it first: sqlrs push STATE REF")
        chain, notes = read_manifest(found[0], str(ref))
        runtime, identity = self._runtime_for(notes, runtime_name, image)
        if ctx is not None:
            ctx.emit("runtime", runtime=runtime.name, reason=f"{identity.description}")
        check_compatible(str(ref), chain, notes, identity)
        tasks: list[Task] = []
        if ctx is not None:  # the chain's states as tasks: shown by watch, kept from eviction meanwhile
            tasks = [Task(ctx.job.id, index, "base" if layer.parent_id is None else "step", layer.state_id,
                          layer.source,
                          TaskStatus.CACHED if self.catalog.is_kept(layer.state_id) else TaskStatus.PENDING)
                     for index, layer in enumerate(chain)]
            ctx.set_tasks(tasks)
            ctx.emit("plan", runtime=runtime.name, identity=identity.description,
                     steps=[{"index": task.index, "kind": task.kind, "source": task.source, "state_id": task.state_id,
                             "cached": task.status == TaskStatus.CACHED} for task in tasks])
        pulled = self.materialize(ctx, registry, chain, runtime, identity, tasks)
        return {"state_id": chain[-1].state_id, "reference": str(ref), "digest": found[1], "pulled": pulled,
                "layers": len(chain), "runtime": runtime.name}

    def _runtime_for(self, notes: RuntimeNotes, name: str | None, image: str | None) \
            -> tuple[Runtime, RuntimeIdentity]:
        if (not name or name == "auto") and notes.runtime in self.identities.registry.names() \
                and self.identities.registry.probe(notes.runtime).available:
            name = notes.runtime
        runtime = self.identities.registry.choose(name).runtime
        if image is None and runtime.name == notes.runtime:
            image = notes.image
        if not runtime.needs_image and postgres_major(notes.version):
            # the binaries of the chain's major when they are here; else the default ones, which
            # check_compatible then names as another PostgreSQL (an image is what it is, alike)
            try:
                return runtime, self.identities.identity_for(runtime, image, postgres_major(notes.version))
            except RuntimeUnavailable:
                pass
        return runtime, self.identities.identity_for(runtime, image, None)


    def materialize(self, ctx: JobContext | None, registry: StateRegistry, chain: list[LayerInfo],
                     runtime: Runtime, identity: RuntimeIdentity, tasks: list[Task] | None = None) -> list[str]:
        pulled: list[str] = []
        by_state = {task.state_id: task for task in tasks or []}
        for layer in chain:
            lock = self.locks.get(layer.state_id)
            while not lock.acquire(timeout=0.2):
                if ctx is not None:
                    ctx.check_cancel()
            try:
                if self.catalog.is_kept(layer.state_id):
                    continue
                started = time.monotonic()
                state = self._pull_one(ctx, registry, layer, runtime, identity)
                pulled.append(layer.state_id)
                task = by_state.get(layer.state_id)
                if ctx is not None and task is not None:
                    ctx.update_task(task, TaskStatus.DONE, seconds=round(time.monotonic() - started, 3))
                if ctx is not None:
                    self.after_pull(ctx, state)
            finally:
                lock.release()
        return pulled

    def _pull_one(self, ctx: JobContext | None, registry: StateRegistry, layer: LayerInfo, runtime: Runtime,
                  identity: RuntimeIdentity) -> State:
        started = time.monotonic()
        if ctx is not None:
            ctx.emit("pull", state_id=layer.state_id, source=layer.source, digest=layer.digest,
                     total=layer.blob_size)
            ctx.emit("log", stream="engine", text=f"pulling state {layer.state_id[:12]} ({layer.source}, "
                                                    f"{layer.blob_size} bytes)")
        try:
            kind = StateKind(layer.kind)
            span_kinds = [StateKind(entry[2]) for entry in layer.span]
        except ValueError:
            raise Incompatible(f"state {layer.state_id[:12]} or a step before it is of a kind unknown to this "
                               f"sqlrs ({layer.kind!r})", hint="upgrade sqlrs") from None
        now = self.clock.now()
        state = State(id=layer.state_id, parent_id=layer.parent_id, base_id=layer.base_id,
                      step_hash=layer.step_hash, kind=kind, runtime=runtime.name, source=layer.source,
                      data_path=self.layout.state_rel(layer.state_id), size_bytes=0,
                      build_seconds=layer.build_seconds, created_at=now, last_used_at=now)
        previous = layer.parent_id or ""
        span = []
        for position, ((unkept_id, step, _kind, source), unkept_kind) in enumerate(zip(layer.span, span_kinds,
                                                                                       strict=True)):
            span.append(UnkeptState(id=unkept_id, parent_id=previous, step_hash=step, kind=unkept_kind,
                                    source=source, build_seconds=0.0, kept_id=layer.state_id, position=position,
                                    created_at=now))
            previous = unkept_id
        download = self.layout.tmp_dir / f"pull-{layer.state_id[:16]}.{secrets.token_hex(4)}"
        temporary = self.layout.tmp_dir / f"{layer.state_id}.{secrets.token_hex(4)}"
        try:
            download.mkdir()
            blob = download / "layer"
            registry.fetch_blob(layer.digest, layer.blob_size, blob,
                                TransferProgress(ctx, direction="pull", state_id=layer.state_id, digest=layer.digest))
            crash_point("pull:downloaded")
            if layer.parent_id is None:
                self.store.create(temporary)
            else:
                parent = self.catalog.kept(layer.parent_id)
                if parent is None:
                    raise Conflict(f"state {layer.parent_id[:12]} vanished while pulling on it")
                self.store.clone(self.layout.abs(parent.data_path), temporary)
            try:
                self.registries.layers.apply_layer(blob, temporary, identity.server_uid, identity.server_gid)
            except LayerError as exc:
                raise CorruptBlob(f"layer of state {layer.state_id[:12]} is not a valid state layer: {exc}") from None
            if layer.parent_id is None:
                if os.geteuid() == 0 and identity.server_uid is not None:
                    os.chown(temporary, identity.server_uid, identity.server_gid or -1)
                os.chmod(temporary, 0o700)
            shutil.rmtree(download, ignore_errors=True)
            [state] = self.catalog.publish([Finished(temporary, state, span)], synced="pull:applied")
        except BaseException:
            shutil.rmtree(download, ignore_errors=True)
            self.store.delete(temporary)
            raise
        if ctx is not None:
            ctx.emit("log", stream="engine", text=f"pulled state {layer.state_id[:12]} in "
                                                    f"{time.monotonic() - started:.1f}s")
        return state
