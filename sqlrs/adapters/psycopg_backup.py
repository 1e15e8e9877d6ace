"""`OnlineBackup` on psycopg 3: PostgreSQL's non-exclusive low-level backup API over the
server's Unix socket (pg_backup_start/stop from PostgreSQL 15, pg_start/stop_backup before)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path

import psycopg

from sqlrs.adapters.psycopg_admin import PROBE_NAME
from sqlrs.domain.errors import RuntimeFailure
from sqlrs.domain.roles import ENGINE_ROLE
from sqlrs.ports.backup import BackupResult

_START_FILE = re.compile(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", re.MULTILINE)


class PsycopgBackup:
    @staticmethod
    def _reserve_wal(conn: psycopg.Connection) -> None:
        """Keep the WAL from now on until the session ends, whatever checkpoints happen meanwhile.

        A slow copy (the copy store, a big instance) can outlast checkpoint_timeout; a checkpoint
        then removes old segments, possibly the backup's first one. A temporary physical slot
        holds them (dropped with the session). Without slots (max_replication_slots = 0) the
        backup still works when no checkpoint falls into the copy.
        """
        name = f"sqlrs_snapshot_{secrets.token_hex(6)}"
        try:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (name,))
        except psycopg.Error:
            pass

    def backup(self, socket_dir: Path, port: int, label: str, copy: Callable[[], None],
               timeout: float = 60.0) -> BackupResult:
        try:
            conn = psycopg.connect(host=str(socket_dir), port=port, user=ENGINE_ROLE, dbname="postgres",
                                   autocommit=True, connect_timeout=max(1, int(timeout)),
                                   application_name=PROBE_NAME)
        except psycopg.OperationalError as exc:
            raise RuntimeFailure(f"cannot connect to the server: {exc}".strip()) from exc
        # the backup belongs to this session: closing it (also on errors) aborts a started backup
        with conn:
            modern = conn.info.server_version >= 150000
            self._reserve_wal(conn)
            try:
                if modern:
                    conn.execute("SELECT pg_backup_start(%s, fast => true)", (label,))
                else:
                    conn.execute("SELECT pg_start_backup(%s, fast => true, exclusive => false)", (label,))
            except psycopg.Error as exc:
                raise RuntimeFailure(f"the server refused to start a backup: {exc}".strip()) from exc
            copy()
            try:
                if modern:
                    row = conn.execute("SELECT lsn, labelfile, spcmapfile, pg_walfile_name(lsn) "
                                       "FROM pg_backup_stop(wait_for_archive => false)").fetchone()
                else:
                    row = conn.execute("SELECT lsn, labelfile, spcmapfile, pg_walfile_name(lsn) "
                                       "FROM pg_stop_backup(false, false)").fetchone()
            except psycopg.Error as exc:
                raise RuntimeFailure(f"the server could not stop the backup: {exc}".strip()) from exc
        assert row is not None
        label_file, spcmap, stop_file = str(row[1]), str(row[2] or ""), str(row[3])
        match = _START_FILE.search(label_file)
        if match is None:
            raise RuntimeFailure("unexpected backup_label from the server", details={"backup_label": label_file})
        return BackupResult(label_file=label_file, tablespace_map=spcmap, start_wal_file=match.group(1),
                            stop_wal_file=stop_file)
