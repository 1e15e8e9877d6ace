"""Where sqlrs keeps its state; light enough for the CLI's hot path."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_STATE_DIR = Path("/var/lib/sqlrs")


def default_state_dir() -> Path:
    """`SQLRS_STATE_DIR`, else the platform state dir; as root, /var/lib/sqlrs.

    Root's home is mode 700, and PostgreSQL must run as an unprivileged user who has to reach
    the data directories, so a root engine keeps its state where that user can enter
    (docs/decisions/0001-root-state-dir.md).
    """
    override = os.environ.get("SQLRS_STATE_DIR")
    if override:
        return Path(override).absolute()
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    from platformdirs import user_state_dir

    return Path(user_state_dir("sqlrs", appauthor=False))
