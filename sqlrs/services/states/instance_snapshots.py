"""Manual snapshots: save a running instance's current data as a new state (`sqlrs snapshot`).

The instance keeps running and its clients stay connected. The data directory is copied online,
the way a base backup is made:

1. `pg_backup_start(label, fast => true)` on the instance (a checkpoint; from now on the server
   writes full pages, so a copy taken file by file while it runs can be repaired by its WAL);
2. clone the instance's volume with the snapshot store into `scratch/` (btrfs: one atomic
   subvolume snapshot; reflink/copy: file by file while the server writes);
3. `pg_backup_stop()`: the server switches to a new WAL segment and returns the backup_label;
4. write backup_label (and tablespace_map) into the clone, copy the WAL segments from the
   backup's start through its stop into the clone's pg_wal, and drop the lock file;
5. start a scratch server on the clone: crash recovery from the backup_label replays the WAL to
   a consistent point (past the backup's end); clear the instance's password; fast shutdown,
   which leaves a clean checkpoint; the same runtime and image as the instance, so this works
   alike for native, docker and podman;
6. commit as prepare.py commits a built state: sync, rename the scratch volume to
   `states/<id>` (scratch/ is a temporary name: an engine that crashes before the rename
   removes it at its next start), then the metadata row.

The new state is a child of the instance's state (same base and runtime), of kind `snapshot`.
Its id is unique (`keys.snapshot_id`: the parent and a random nonce), since what a snapshot holds
depends on what clients did, not on inputs. It can never be rebuilt, so eviction leaves it alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from sqlrs.domain import keys
from sqlrs.domain.errors import Conflict, NotFound, SqlrsError, StoreFailure
from sqlrs.domain.model import Instance, InstanceKind, State, StateKind
from sqlrs.ports.backup import BackupResult, OnlineBackup
from sqlrs.services.instances.database_hosts import database_name
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.instances.server_instances import INSTANCE_USER
from sqlrs.services.instances.servers import Server
from sqlrs.services.states.catalog import Finished, StateCatalog

log = logging.getLogger("sqlrs.engine")

# A file-by-file clone of a live directory can meet a file the server just removed (a temporary
# sort file, a dropped table, an old WAL segment): the clone fails and is made again.
CLONE_ATTEMPTS = 3
# Left in a live data directory, never wanted in a copy (PostgreSQL's base backup docs).
NOT_COPIED = ("postmaster.pid", "postmaster.opts", "backup_label.old", "tablespace_map.old")
EMPTIED = ("pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_replslot")


def snapshot_source(instance: Instance, name: str | None) -> str:
    """The new state's `source`: what `ls --states` shows, and where the name is kept."""
    return f"snapshot of {instance.id}" + (f" ({name})" if name else "")


class InstanceSnapshots:
    def __init__(self, catalog: StateCatalog, instances: Instances, backup: OnlineBackup,
                 after_commit: Callable[[], object] | None = None):
        self.catalog = catalog
        self.repo = catalog.repo
        self.store = catalog.store
        self.layout = catalog.layout
        self.locks = catalog.locks
        self.instances = instances
        self.admin = instances.servers.admin
        self.clock = instances.servers.clock
        self.backup = backup
        self.after_commit = after_commit  # keep the cache within its bounds

    def snapshot(self, instance: Instance, name: str | None = None) -> State:
        """Save `instance`'s current data as a new state, child of its state; it keeps running."""
        started = time.monotonic()
        parent = self.repo.get_state(instance.state_id)
        if parent is None:
            raise NotFound(f"the state {instance.state_id[:12]} of instance {instance.id} is gone")
        if instance.pooled:
            raise Conflict(f"instance {instance.id} is a warm pool spare", hint="snapshot an instance you use")
        instance = self.instances.ensure_running(instance)  # a vanished server is restarted first
        live = self.instances.server_of(instance)
        state_id = keys.snapshot_id(parent.id, secrets.token_hex(16))
        key = f"s{secrets.token_hex(5)}"
        rel = f"scratch/{key}"
        clone = self.layout.abs(rel)
        server: Server | None = None
        try:
            result = self.backup.backup(live.spec.run_dir, live.spec.port, f"sqlrs snapshot {state_id[:12]}",
                                        lambda: self._clone_live(live.spec.data_dir, clone))
            self._complete(live.spec.data_dir, clone, result)
            # recovery replays the WAL up to a consistent point; a fast shutdown then checkpoints
            server = self.instances.servers.start_server(live.runtime, live.spec.identity, key, rel)
            if instance.kind == InstanceKind.DATABASE:
                self._keep_only_its_database(server, instance)
            self.admin.execute(server.spec.run_dir, server.spec.port,
                               (f"ALTER ROLE {INSTANCE_USER} PASSWORD NULL",))
            server.stop()
            server.discard()  # a stopped container still mounts the clone
            server = None
            for leftover in ("backup_label.old", "tablespace_map.old"):
                (clone / leftover).unlink(missing_ok=True)
            state = self._commit(clone, state_id, parent, instance, name, time.monotonic() - started)
        finally:
            if server is not None:
                server.discard()
            self.store.delete(clone)  # gone already when committed
            shutil.rmtree(self.layout.run_dir(key), ignore_errors=True)
        log.info("instance %s saved as state %s in %.2fs", instance.id, state.id, state.build_seconds)
        if self.after_commit is not None:
            try:
                self.after_commit()
            except SqlrsError as exc:  # the snapshot is made; a full cache is for the next build
                log.warning("after snapshot %s: %s", state.id, exc.message)
        return state

    def _keep_only_its_database(self, server: Server, instance: Instance) -> None:
        """A database instance lives in its state's shared server, beside the state's own
        `postgres`, the template and the other instances' databases: the copy keeps its database
        alone, as `postgres` (what an instance of the new state will be)."""
        run_dir, port = server.spec.run_dir, server.spec.port
        own = database_name(instance.id)
        rows = self.admin.query(run_dir, port, "SELECT datname, datistemplate FROM pg_database "
                                               "WHERE datname NOT IN ('template0', 'template1')", dbname="template1")
        statements = []
        for name, is_template in rows:
            if name != own:
                quoted = '"' + str(name).replace('"', '""') + '"'
                if is_template:
                    statements.append(f"ALTER DATABASE {quoted} IS_TEMPLATE false")
                statements.append(f"DROP DATABASE {quoted}")
        self.admin.execute(run_dir, port, [*statements, f'ALTER DATABASE "{own}" RENAME TO postgres'],
                           dbname="template1")

    def _clone_live(self, source: Path, target: Path) -> None:
        for attempt in range(1, CLONE_ATTEMPTS + 1):
            try:
                self.store.clone(source, target)
                return
            except StoreFailure as exc:
                if attempt == CLONE_ATTEMPTS:
                    raise
                log.info("cloning the live data directory %s failed (%s); again", source, exc.message)

    def _complete(self, live: Path, clone: Path, result: BackupResult) -> None:
        """Make the clone a base backup PostgreSQL can recover from on its own."""
        owner = os.stat(clone)
        for name in NOT_COPIED:
            (clone / name).unlink(missing_ok=True)
        for name in EMPTIED:
            directory = clone / name
            if directory.is_dir():
                for entry in directory.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        files = {"backup_label": result.label_file}
        if result.tablespace_map:
            files["tablespace_map"] = result.tablespace_map
        for name, text in files.items():
            self._write_owned(clone / name, text.encode(), owner)
        # the clone holds the WAL as it was while copying; recovery needs it through the stop
        # point, which the live server has now completed (pg_backup_stop switched segments)
        segments = [entry for entry in (live / "pg_wal").iterdir()
                    if len(entry.name) == 24 and result.start_wal_file <= entry.name <= result.stop_wal_file]
        names = {entry.name for entry in segments}
        if result.stop_wal_file not in names or result.start_wal_file not in names:
            raise StoreFailure(f"the WAL of the backup ({result.start_wal_file}..{result.stop_wal_file}) "
                               f"is no longer in {live / 'pg_wal'}")
        for segment in segments:
            target = clone / "pg_wal" / segment.name
            partial = target.with_name(segment.name + ".sqlrs")
            shutil.copyfile(segment, partial)
            os.chown(partial, owner.st_uid, owner.st_gid)
            os.chmod(partial, 0o600)
            os.replace(partial, target)

    @staticmethod
    def _write_owned(path: Path, data: bytes, owner: os.stat_result) -> None:
        path.write_bytes(data)
        os.chown(path, owner.st_uid, owner.st_gid)
        os.chmod(path, 0o600)

    def _commit(self, clone: Path, state_id: str, parent: State, instance: Instance, name: str | None,
                seconds: float) -> State:
        now = self.clock.now()
        state = State(
            id=state_id, parent_id=parent.id, base_id=parent.base_id, step_hash=None,
            kind=StateKind.SNAPSHOT, runtime=parent.runtime, source=snapshot_source(instance, name),
            data_path=self.layout.state_rel(state_id), size_bytes=0,
            build_seconds=round(seconds, 3), created_at=now, last_used_at=now,
        )
        with self.locks.get(state_id):
            [state] = self.catalog.publish([Finished(clone, state)], synced="snapshot:synced")
        return state

