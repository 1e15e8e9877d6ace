"""Where sqlrs keeps its state; light enough for the CLI's hot path (no pathlib, no platformdirs
unless they are needed)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

ROOT_STATE_DIR = "/var/lib/sqlrs"


def default_state_dir_str() -> str:
    """`default_state_dir()` as a string, without importing pathlib (the CLI's fast path).

    Relative overrides are joined to the cwd without normalizing, as `Path.absolute()` does."""
    override = os.environ.get("SQLRS_STATE_DIR")
    if override:
        return os.path.join(os.getcwd(), override)
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    from platformdirs import user_state_dir

    return str(user_state_dir("sqlrs", appauthor=False))


def default_state_dir() -> Path:
    """`SQLRS_STATE_DIR`, else the platform state dir; as root, /var/lib/sqlrs.

    Root's home is mode 700, and PostgreSQL must run as an unprivileged user who has to reach
    the data directories, so a root engine keeps its state where that user can enter
    (docs/decisions/0001-root-state-dir.md).
    """
    from pathlib import Path

    return Path(default_state_dir_str())
