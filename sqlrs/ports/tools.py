"""Tools on the engine's host that step executors start (`prepare:lb`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

Reader = Callable[[str], "str | None"]
Lister = Callable[[str], "list[str] | None"]


class LiquibaseLauncher(Protocol):
    """How a Liquibase installation is started and how its changelogs are read from disk."""

    def command(self, launcher: Path, java: str | None = None) -> list[str]:
        """argv that starts the Liquibase whose launcher script is `launcher`."""
        ...

    def disk_reader(self, root: Path) -> tuple[Reader, Lister]:
        """read/listdir of logical paths below `root` (the search path); a path leaving it is a
        UsageError."""
        ...
