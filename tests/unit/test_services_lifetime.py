"""Idle TTLs and owner processes (services/instances/lifetime.py) wired on fakes with real instance
bookkeeping: expiry removes the server, its data and its row; a connected client keeps it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import Fakes, prepare, wired

from sqlrs.entrypoints.engine.bootstrap import Services

Wired = tuple[Services, Fakes]
TTL = 60


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired({"warm.enabled": False}) as pair:
        yield pair


def gone(services: Services, fakes: Fakes, instance_id: str) -> bool:
    return (fakes.repo.get_instance(instance_id) is None
            and instance_id not in [server.spec.instance_id for server in fakes.runtime.running()]
            and not services.layout.abs(f"instances/{instance_id}").exists())


def test_an_instance_without_clients_goes_after_its_ttl(engine: Wired) -> None:
    services, fakes = engine
    instance_id = prepare(services, "create table a()", ttl_seconds=TTL)["instance_id"]
    forever = prepare(services, "create table a()", ttl_seconds=0)["instance_id"]
    assert services.lifetime.pending()
    fakes.clock.advance(TTL - 1)
    assert services.lifetime.check() == []
    fakes.clock.advance(1)
    assert services.lifetime.check() == [instance_id]
    assert gone(services, fakes, instance_id)
    assert fakes.repo.get_instance(forever) is not None  # no TTL: never expires
    assert services.lifetime.check() == []
    assert not services.lifetime.pending()  # the engine may stop on its idle timeout now


def test_a_connected_client_keeps_an_instance_and_its_idle_clock_restarts(engine: Wired) -> None:
    services, fakes = engine
    result = prepare(services, "create table a()", ttl_seconds=TTL)
    fakes.admin.connections[result["port"]] = 1
    fakes.clock.advance(TTL * 3)
    assert services.lifetime.check() == []
    assert services.lifetime.describe(result["instance_id"], TTL, False)["connections"] == 1
    fakes.admin.connections[result["port"]] = 0  # the client left: a whole TTL from now
    fakes.clock.advance(TTL - 1)
    assert services.lifetime.check() == []
    fakes.clock.advance(1)
    assert services.lifetime.check() == [result["instance_id"]]
    assert gone(services, fakes, result["instance_id"])


def test_an_instance_goes_with_its_owner_process(engine: Wired) -> None:
    services, fakes = engine
    owner = (4242, 777)
    fakes.owners_alive.add(owner)
    instance_id = prepare(services, "create table a()")["instance_id"]
    instance = fakes.repo.get_instance(instance_id)
    assert instance is not None
    services.lifetime.adopt(instance, owner)
    assert services.lifetime.check() == []
    fakes.owners_alive.discard(owner)
    assert services.lifetime.check() == [instance_id]
    assert gone(services, fakes, instance_id)
