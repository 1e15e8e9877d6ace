"""Container runtimes offer the housekeeping port the services reach them through.

services/instances/server_instances.py and services/recovery.py find leftover containers through
`isinstance(runtime, ContainerHousekeeping)`: a renamed method would make that silently false and
leftovers would stay. The native runtime has no containers, so it does not offer it.
"""

from __future__ import annotations

from sqlrs.adapters.containers.runtime import ContainerRuntime
from sqlrs.adapters.native import NativeRuntime
from sqlrs.ports.housekeeping import ContainerHousekeeping


def test_container_runtimes_offer_housekeeping() -> None:
    assert issubclass(ContainerRuntime, ContainerHousekeeping)


def test_the_native_runtime_does_not() -> None:
    assert not issubclass(NativeRuntime, ContainerHousekeeping)
