"""The `OnlineBackup` port: copy a running server's data directory consistently (PostgreSQL's
low-level base backup API), for snapshots of instances that keep serving their clients.

Between the start and the stop of a backup the server forces full-page writes, so a file-by-file
copy made meanwhile plus the WAL up to the stop point recovers to a consistent state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import attrs


@attrs.frozen
class BackupResult:
    """What `pg_backup_stop` returned, ready to be written into the copy."""

    label_file: str  # the content of backup_label
    tablespace_map: str  # the content of tablespace_map ("" when there are no tablespaces)
    start_wal_file: str  # first WAL segment recovery needs
    stop_wal_file: str  # last WAL segment recovery needs (complete: the server switched past it)


class OnlineBackup(Protocol):
    def backup(self, socket_dir: Path, port: int, label: str, copy: Callable[[], None],
               timeout: float = 60.0) -> BackupResult:
        """Start a non-exclusive backup (fast checkpoint), call `copy()`, stop the backup.

        The backup is stopped (or aborted with the session) whatever `copy` does; its errors
        propagate. Raises RuntimeFailure when the server refuses (e.g. wal_level=minimal).
        """
        ...
