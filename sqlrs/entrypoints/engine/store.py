"""The snapshot store on disk: how the engine opens it when it starts (`open_store`, called by the
composition root) and how `sqlrs init local` sets it up (`LocalStore`, run by the CLI in its own
process: creating and mounting a volume needs root, which the engine may not have).

`init local` chooses the snapshot backend and, for btrfs/reflink (a store that names the
filesystem it needs: `SnapshotStorePlugin.volume_fs`), puts the store on a loopback volume (SPEC 3
and 7): a sparse image `<state_dir>/store.img` mounted (as root, by this process) on the store
root, recorded in the config (`store.volume.image`, `store.volume.fs`, `snapshot.backend`); the
engine mounts it again when it starts after a reboot.

Replacing the store never loses data silently: when the store holds states or instances, the
setup refuses unless `--force`, which first removes every instance and state through the
engine (states are not migrated: they are a cache and rebuild from their scripts). The engine
is stopped before the store changes (running instances survive an engine restart, but not a
store replacement) and cannot be respawned meanwhile: this process holds `spawn.lock` and
`engine.lock`. Running it again with the same backend and no new size is a no-op that re-mounts
the volume if needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlrs.adapters.snapshots import loopvolume, registered_stores, select_backend
from sqlrs.config_file import ConfigFile
from sqlrs.domain.sizes import DEFAULT_VOLUME_SIZE, format_size
from sqlrs.engine_client.connection import ENGINE_STOP_TIMEOUT, EngineClient, live_engine, shutdown_engine
from sqlrs.engine_client.errors import ClientError, usage
from sqlrs.ports.snapshots import SnapshotStore

STORE_ENTRIES = ("states", "instances", "scratch", "tmp", "standby")  # what Layout.ensure makes in the store


def open_store(config: ConfigFile, layout_state_dir: Path) -> tuple[SnapshotStore, str]:
    from sqlrs.adapters.snapshots import select_backend

    store_root = Path(config.get("store.path") or layout_state_dir / "store")
    image = config.get("store.volume.image")
    if image:
        from sqlrs.adapters.snapshots.loopvolume import ensure_mounted

        ensure_mounted(Path(image), store_root, config.get("store.volume.fs") or "btrfs")
    store_root.mkdir(parents=True, exist_ok=True)
    requested = config.get("snapshot.backend")
    store, passed_over = select_backend(store_root, requested)
    note = ""
    if not store.copy_on_write:
        why = (f"because snapshot.backend is set to {requested}" if requested == store.backend else
               f"because {store_root} has no copy-on-write support ({'; '.join(passed_over)})")
        note = (f"SLOW SNAPSHOTS: the snapshot backend is '{store.backend}' " + why + ": every instance and every "
                "build step copies the whole data directory (seconds per GB, no disk shared between "
                "instances). Fix: `sqlrs init local --snapshot btrfs` (or --snapshot reflink) as root")
    return store, note



class LocalStore:
    """`sqlrs init local`'s work on the state directory `state_dir`: `note` tells the user what
    happens, `client` reaches the engine (spawned on the current store if needed)."""

    def __init__(self, state_dir: Path, force: bool, note: Callable[[str], None],
                 client: Callable[[], EngineClient]):
        self.note = note
        self.client = client
        self.force = force
        self.state_dir = state_dir
        self.config = ConfigFile(self.state_dir / "config.json")
        self.store_root = Path(os.path.abspath(self.config.get("store.path") or self.state_dir / "store"))

    # -- the command ------------------------------------------------------------------------------
    def run(self, snapshot: str, runtime: str | None, store_size: str | None) -> dict[str, Any]:

        volume_fs = {store.name: store.volume_fs for store in registered_stores()}.get(snapshot)
        if store_size is not None and volume_fs is None:
            raise usage("--store-size is for --snapshot btrfs or reflink (a loopback volume)",
                        hint=f"sqlrs init local --snapshot btrfs --store-size {store_size}")
        size = loopvolume.parse_volume_size(store_size or DEFAULT_VOLUME_SIZE)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        changes: dict[str, Any] = {"snapshot.backend": snapshot}
        if runtime:
            changes["container.runtime"] = runtime
        result: dict[str, Any] = {"state_dir": str(self.state_dir), "snapshot": {"backend": snapshot},
                                  "store": {"root": str(self.store_root)}, "runtime": runtime}
        if volume_fs is not None:
            volume = self._volume(snapshot, volume_fs, size, store_size is not None, changes)
            result["store"]["volume"] = volume
            result["snapshot"]["effective"] = snapshot
        else:
            chosen = self._record_only(snapshot, changes)
            result["snapshot"]["effective"] = chosen.backend if chosen is not None else None
            if chosen is not None and not chosen.copy_on_write:
                self.note(f"WARNING: snapshots at {self.store_root} are full copies (no copy-on-write "
                              "support there): slow clones, no shared disk. For instant clones: "
                              "sudo sqlrs init local --snapshot btrfs")
        env_backend = os.environ.get("SQLRS_SNAPSHOT")
        if env_backend and env_backend != snapshot:
            self.note(f"note: SQLRS_SNAPSHOT={env_backend} in the environment overrides snapshot.backend")
        return result

    def _record_only(self, snapshot: str, changes: dict[str, Any]) -> SnapshotStore | None:
        """copy/auto: nothing to build; the engine picks the backend up when it (re)starts.
        Returns the store the engine will use (None when the store volume is not mounted)."""
        def effective() -> SnapshotStore | None:
            if self.config.get("store.volume.image") and loopvolume.mounted_image(self.store_root) is None:
                return None  # the engine mounts it first; nothing to probe yet
            self.store_root.mkdir(parents=True, exist_ok=True)
            return select_backend(self.store_root, snapshot)[0]

        if self.config.stored().get("snapshot.backend", "auto") != snapshot:
            with self._exclusive():  # the engine opens the store once: restart it on the new backend
                chosen = effective()
                self.config.update(changes)
        else:
            chosen = effective()
            self.config.update(changes)
        return chosen

    def _volume(self, backend: str, fs: str, size: int, size_given: bool, changes: dict[str, Any]) -> dict[str, Any]:
        current_image = self.config.get("store.volume.image") or ""
        current_fs = self.config.get("store.volume.fs") or ""
        image = Path(os.path.abspath(current_image or self.state_dir / "store.img"))
        keep = bool(current_image) and current_fs == fs and os.path.isfile(image) and (
            not size_given or os.path.getsize(image) == size)
        info = {"image": str(image), "fs": fs, "size": format_size(size), "created": False}
        if keep:  # idempotent: the same kind of volume exists; mount it if needed, record the backend
            info["size"] = format_size(os.path.getsize(image))
            if loopvolume.mounted_image(self.store_root) is None:
                with self._exclusive():  # an engine cannot work on an unmounted volume: restart it
                    loopvolume.ensure_mounted(image, self.store_root, fs)
            # auto picks the same backend on this filesystem: a running engine needs no restart
            select_backend(self.store_root, backend)
            self.config.update(changes)
            return info

        replacing = bool(current_image) and os.path.abspath(current_image) == str(image)
        loopvolume.preflight(image, self.store_root, fs, size, replacing=replacing)
        self._empty_store_or_force()
        with self._exclusive():
            held = self._store_contents()
            if held and not self.force:
                raise ClientError(f"the store changed meanwhile: it now holds {held}", hint="run the command again")
            self._remove_old_store(current_image)
            self.note(f"creating a {format_size(size)} {fs} volume {image} on {self.store_root}")
            loopvolume.create_loop_volume(image, self.store_root, fs, size)
            try:
                select_backend(self.store_root, backend)
            except Exception:
                with contextlib.suppress(Exception):
                    loopvolume.unmount(self.store_root)
                image.unlink(missing_ok=True)
                raise
            self.config.update({**changes, "store.volume.image": str(image), "store.volume.fs": fs})
        info["created"] = True
        return info

    # -- what the store holds ---------------------------------------------------------------------
    def _store_contents(self) -> str:
        """'3 states and 1 instance' when the metadata or the store directories hold any; ''."""
        import sqlite3

        states = instances = 0
        database = self.state_dir / "metadata.db"
        if database.exists():
            try:
                with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
                    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    if "states" in tables:
                        states = int(db.execute("SELECT count(*) FROM states").fetchone()[0])
                    if "instances" in tables:
                        # the user's instances: not the engine's warm ones and shared servers
                        columns = {row[1] for row in db.execute("PRAGMA table_info(instances)")}
                        where = " AND ".join(clause for column, clause in (("pooled", "NOT pooled"),
                                                                           ("kind", "kind <> 'host'"))
                                             if column in columns) or "1"
                        instances = int(db.execute(f"SELECT count(*) FROM instances WHERE {where}").fetchone()[0])
            except sqlite3.Error as exc:
                raise ClientError(f"cannot read {database}: {exc}", hint="is another sqlrs process using it?") from None
        for name in ("states", "instances"):
            if database.exists():
                break  # the metadata knows; the directories also hold the engine's own instances
            with contextlib.suppress(OSError):
                found = len(os.listdir(self.store_root / name))
                if name == "states":
                    states = max(states, found)
                else:
                    instances = max(instances, found)
        parts = []
        if states:
            parts.append(f"{states} state{'s' if states != 1 else ''}")
        if instances:
            parts.append(f"{instances} instance{'s' if instances != 1 else ''}")
        return " and ".join(parts)

    def _empty_store_or_force(self) -> None:
        held = self._store_contents()
        if not held:
            return
        if not self.force:
            raise ClientError(
                f"the store at {self.store_root} holds {held}; a new volume would replace it",
                hint="remove them (sqlrs ls --instances; sqlrs rm ID), or pass --force to remove every instance "
                     "and state first (states are a cache: they rebuild from their scripts)",
            )
        self.note(f"--force: removing {held} through the engine")
        client = self.client()  # spawns the engine on the current store if needed
        for instance in client.call("GET", "/v1/instances"):
            client.call("DELETE", f"/v1/instances/{instance['id']}?force=true")
        for state in client.call("GET", "/v1/states"):
            if state.get("parent_id") is None:
                client.call("DELETE", f"/v1/states/{state['id']}?recurse=true&force=true")

    def _remove_old_store(self, current_image: str) -> None:
        """Unmount and delete the previous volume (ours: recorded in the config), then empty the
        store directory so that the new volume can be mounted on it. Only sqlrs's own entries
        are removed; anything else in the directory stops the command."""
        if current_image and loopvolume.mounted_image(self.store_root) is not None:
            loopvolume.unmount(self.store_root)
        self.config.update({"store.volume.image": None, "store.volume.fs": None})
        if current_image:
            Path(current_image).unlink(missing_ok=True)
        if not self.store_root.is_dir():
            return
        leftovers = list(self.store_root.iterdir())
        foreign = [entry.name for entry in leftovers
                   if entry.name not in STORE_ENTRIES and not entry.name.startswith(".sqlrs-probe-")]
        if foreign:
            raise ClientError(f"the store directory {self.store_root} holds entries sqlrs did not make: "
                           + ", ".join(sorted(foreign)[:5]),
                           hint="move them away, or set another store location (sqlrs config set store.path DIR)")
        if leftovers:
            store, _ = select_backend(self.store_root, "auto")
            for entry in leftovers:
                if entry.is_dir() and not entry.is_symlink():
                    for volume in list(entry.iterdir()):  # crash leftovers; recover() would drop them
                        store.delete(volume)
                    entry.rmdir()
                else:
                    entry.unlink()

    # -- the engine ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Stop a running engine and keep any from starting while the store changes."""
        with open(self.state_dir / "spawn.lock", "a+") as spawn_lock:
            fcntl.flock(spawn_lock, fcntl.LOCK_EX)  # CLIs wait here instead of spawning an engine
            self._stop_engine()
            with open(self.state_dir / "engine.lock", "a+") as engine_lock:
                deadline = time.monotonic() + ENGINE_STOP_TIMEOUT
                while True:
                    try:
                        fcntl.flock(engine_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise ClientError("the engine did not stop in time",
                                           hint="stop it with `sqlrs engine stop` and retry") from None
                        time.sleep(0.1)
                yield

    def _stop_engine(self) -> None:
        info = live_engine(self.state_dir)
        if info is None:
            return
        client = EngineClient(str(info["endpoint"]), str(info.get("token")))
        running = sum(1 for job in client.call("GET", "/v1/prepare-jobs") if job.get("status") in ("queued", "running"))
        if running and not self.force:
            raise ClientError(f"the engine is running {running} job(s)",
                           hint="wait for them (sqlrs ls --jobs), or pass --force to stop them")
        pid = int(info.get("pid", 0))
        self.note(f"stopping the engine (pid {pid}); it starts again on demand")
        if shutdown_engine(client, pid):
            return
        raise ClientError(f"the engine (pid {pid}) did not stop in time",
                       hint="stop it with `sqlrs engine stop` and retry")
