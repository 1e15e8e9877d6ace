"""States shared through an OCI registry: push, pull, and the remote cache of prepare.

A state is content-addressed, so the same id means the same data on every machine. `push` puts
the state's chain into a repository, one manifest per state tagged with its id (see
`sqlrs.domain.remote` for the format); a state whose parent is already there costs one layer.
`pull` reads a manifest, checks that the chain was built on this engine's PostgreSQL (the base
id embeds the runtime identity: image digest or native build) and materializes each missing
state of the chain like a build commits one: clone of the parent (or an empty volume for the
base) under store/tmp, the layer applied, syncfs, rename, metadata row. Blobs are verified
before anything is applied; a crash or a bad blob leaves nothing visible (store/tmp is
cleaned by the next engine start).

With `cache.remote` set, prepare asks the registry for the uncached states of its chain, pulls
the deepest one found instead of building it (and what it rests on), and with
`cache.remote_push` pushes every state it builds.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlrs.domain import keys, roles
from sqlrs.domain.errors import Conflict, NotFound, RuntimeUnavailable, UsageError
from sqlrs.domain.model import State, StateKind, Task, TaskStatus, UnkeptState
from sqlrs.domain.remote import (
    CONFIG_MEDIA_TYPE,
    CorruptBlob,
    Incompatible,
    LayerError,
    LayerInfo,
    RegistryError,
    RemoteNotFound,
    RemoteRef,
    RuntimeNotes,
    build_manifest,
    chain_adds_up,
    parse_ref,
    postgres_major,
    read_manifest,
    state_tag,
)
from sqlrs.ports.clock import Clock
from sqlrs.ports.postmaster import pg_major
from sqlrs.ports.registry import RegistryOpener, StateLayers, StateRegistry
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.catalog import Finished, StateCatalog
from sqlrs.services.faults import crash_point
from sqlrs.services.jobs import JobContext
from sqlrs.services.locks import StateLocks
from sqlrs.services.runtimes import RuntimeRegistry
from sqlrs.services.transfers import TransferProgress
from sqlrs.services.transfers import parse_transfer as parse_transfer  # the routes take it from here


class RemoteService:
    def __init__(
        self,
        catalog: StateCatalog,
        runtimes: RuntimeRegistry,
        identity_for: Callable[[Runtime, str | None, str | None], RuntimeIdentity],
        initdb_options: tuple[str, ...],
        clock: Clock,
        locks: StateLocks,
        open_registry: RegistryOpener,
        setting: Callable[[str], Any],
        layers: StateLayers,
        after_pull: Callable[[JobContext, State], None] = lambda ctx, state: None,
    ):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = catalog.store
        self.layout = catalog.layout
        self.runtimes = runtimes
        self.identity_for = identity_for
        self.initdb_options = initdb_options
        self.clock = clock
        self.locks = locks
        self.open_registry = open_registry
        self.setting = setting  # config.get
        self.layers = layers
        self.after_pull = after_pull  # e.g. evict other states when the cache is over its bounds
        self._opened: dict[str, StateRegistry] = {}
        self._guard = threading.Lock()

    # -- configuration -----------------------------------------------------------------------------
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

    def _target(self, text: str | None, state_id: str) -> RemoteRef:
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

    # -- identity ----------------------------------------------------------------------------------
    def _identity_of(self, state: State, image: str | None) -> RuntimeIdentity:
        """The runtime identity that made `state`'s base, from the runtimes and images known here."""
        runtime = self.runtimes.get(state.runtime)
        images: list[str | None] = [image] if image else [None]
        if not image and runtime.needs_image:
            images += sorted({i.image for i in self.repo.list_instances() if i.image and i.runtime == runtime.name})
        major = pg_major(self.layout.abs(state.data_path))
        for candidate in images:
            identity = self.identity_for(runtime, candidate, major)
            if roles.superuser_of(identity.identity, self.initdb_options, state.base_id) is not None:
                return identity
        raise UsageError(f"cannot tell which {runtime.name} image built state {state.id[:12]}",
                         hint="pass it: sqlrs push --image IMAGE ...")

    @staticmethod
    def _notes(identity: RuntimeIdentity) -> RuntimeNotes:
        return RuntimeNotes(identity.runtime, identity.identity, identity.description, identity.version,
                            identity.image)

    def check_compatible(self, where: str, chain: list[LayerInfo], notes: RuntimeNotes,
                          identity: RuntimeIdentity) -> None:
        """Refuse a chain built on another PostgreSQL or runtime; check its ids add up."""
        local_bases = {roles.base_id(identity.identity, self.initdb_options, name) for name in roles.SUPERUSERS}
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

    # -- push --------------------------------------------------------------------------------------
    def resolve_state(self, ref: str, find_instance: Callable[[str], Any], find_state: Callable[[str], State]) \
            -> State:
        """A state by id (prefix), or the state of an instance (by id or name)."""
        try:
            instance, _ = find_instance(ref)
        except (NotFound, UsageError):
            if not all(c in "0123456789abcdef" for c in ref):
                raise NotFound(f"no state, instance or name matches {ref!r}",
                               hint="list them with: sqlrs ls --states, sqlrs ls --instances") from None
            instance = None
        if instance is not None:
            state = self.repo.get_state(instance.state_id)
            if state is None:
                raise NotFound(f"the state of instance {instance.id} is gone")
            return state
        return find_state(ref)

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
        identity = identity or self._identity_of(state, image)
        notes = self._notes(identity)
        ref = self._target(target, state.id)
        registry = self.registry(ref)
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
            digest, size, _ = self.layers.write_layer(self.layout.abs(state.data_path),
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

    # -- pull --------------------------------------------------------------------------------------
    def pull(self, ctx: JobContext | None, text: str, runtime_name: str | None, image: str | None) -> dict[str, Any]:
        """Pull the state at `text` (HOST/REPO:TAG, or a state id in the remote cache).

        With no runtime (or image) asked for, the state's own runtime (and image) is used when it
        is available here, so `sqlrs pull REF` just works on an engine that can run it."""
        if "/" not in text and all(c in "0123456789abcdef" for c in text) and len(text) == 64:
            cache = self.cache_ref()
            if cache is None:
                raise UsageError("a state id names a state of the remote cache, and cache.remote is not set",
                                 hint="give a reference HOST[:PORT]/REPO:TAG, or set cache.remote")
            ref = cache.with_tag(state_tag(text))
        else:
            ref = parse_ref(text)
        registry = self.registry(ref)
        found = registry.manifest(ref.reference)
        if found is None:
            raise RemoteNotFound(f"{ref} is not in the registry", hint="push it first: sqlrs push STATE REF")
        chain, notes = read_manifest(found[0], str(ref))
        runtime, identity = self._runtime_for(notes, runtime_name, image)
        if ctx is not None:
            ctx.emit("runtime", runtime=runtime.name, reason=f"{identity.description}")
        self.check_compatible(str(ref), chain, notes, identity)
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
        if (not name or name == "auto") and notes.runtime in self.runtimes.names() \
                and self.runtimes.probe(notes.runtime).available:
            name = notes.runtime
        runtime = self.runtimes.choose(name).runtime
        if image is None and runtime.name == notes.runtime:
            image = notes.image
        if not runtime.needs_image and postgres_major(notes.version):
            # the binaries of the chain's major when they are here; else the default ones, which
            # check_compatible then names as another PostgreSQL (an image is what it is, alike)
            try:
                return runtime, self.identity_for(runtime, image, postgres_major(notes.version))
            except RuntimeUnavailable:
                pass
        return runtime, self.identity_for(runtime, image, None)


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
                self.layers.apply_layer(blob, temporary, identity.server_uid, identity.server_gid)
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

    # -- the remote cache of prepare ---------------------------------------------------------------
