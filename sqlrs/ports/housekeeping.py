"""The `ContainerHousekeeping` port: what container runtimes offer beyond `Runtime`.

A container runtime labels every container it makes, so containers nobody owns any more (an
engine crashed between starting a container and recording it) can be found and removed. The
native runtime has no such thing; services ask `isinstance(runtime, ContainerHousekeeping)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class ContainerHousekeeping(Protocol):
    def leftovers(self, labels: Mapping[str, str | None] | None = None) -> list[str]:
        """Ids of containers sqlrs made: all of them, or those carrying `labels`."""
        ...

    def remove_container(self, ref: str) -> None:
        """Kill and remove one container (e.g. one of `leftovers`); a missing one is fine."""
        ...
