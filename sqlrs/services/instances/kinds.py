"""Instances of every kind, as their users get them: a server instance (a warm one claimed first
when one is ready), or a database instance in its state's shared server. Prepare, the API's
instance requests, TTLs and owners, runs, compare and `rm` go through here; the kinds are made
below it (server_instances.py, databases.py, pool.py), which do not know each other's callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus, State
from sqlrs.ports.admin import ClientSession
from sqlrs.ports.runtime import Runtime, RuntimeIdentity
from sqlrs.services.instances.databases import DatabaseInstances
from sqlrs.services.instances.server_instances import ServerInstances
from sqlrs.services.instances.servers import Server

log = logging.getLogger("sqlrs.engine")


class WarmInstances(Protocol):
    """Started instances kept ready (services/instances/pool.py): a hit claims one instead of starting one."""

    def claim(self, state_id: str, ttl_seconds: int, name: str | None = None, *, ephemeral: bool = False,
              job_id: str | None = None, runtime: str | None = None) -> Instance | None:
        """A ready warm instance of the state, handed out with these settings; None when none is ready."""

    def used(self, state: State, runtime: str, image: str | None) -> None:
        """An instance of the state was made: keep warm instances of it ready."""


Resolve = Callable[[State, str | None], tuple[Runtime, RuntimeIdentity]]  # the runtime and identity of a state


class Instances:
    def __init__(self, servers: ServerInstances, databases: DatabaseInstances, warm: WarmInstances,
                 resolve: Resolve):
        self.servers = servers
        self.databases = databases
        self.warm = warm
        self.resolve = resolve  # what starts instances of a state (image: the request's, or the default)

    def create(self, state: State, runtime: Runtime, identity: RuntimeIdentity, *,
               kind: InstanceKind = InstanceKind.SERVER, name: str | None = None, ephemeral: bool = False,
               job_id: str | None = None, ttl_seconds: int = 0,
               on_copy: Callable[[], object] | None = None, spares: bool = True) -> Instance:
        """An instance of `state` for a user: a database in its shared server, or a server (a warm
        one when one is ready, else one cloned and started now). `on_copy` is called before the
        state's data directory is cloned by the store. `spares` False: a one-off instance (a
        comparison's reader, a prefix of check:* or bisect:*) takes a warm server or a copy made
        ahead if one is ready but asks for none to follow."""
        if kind == InstanceKind.DATABASE:
            return self.databases.create(state, runtime, identity, name=name, ephemeral=ephemeral, job_id=job_id,
                                         ttl_seconds=ttl_seconds, spares=spares)
        claimed = self.warm.claim(state.id, ttl_seconds, name, ephemeral=ephemeral, job_id=job_id,
                                  runtime=runtime.name)
        if claimed is None:
            claimed = self.servers.create(state, runtime, identity, name=name, ephemeral=ephemeral, job_id=job_id,
                                          ttl_seconds=ttl_seconds, on_copy=on_copy)
        if spares:
            self.warm.used(state, runtime.name, identity.image)  # after ours: its start does not slow this one
        return claimed

    def hand_out(self, state: State, kind: InstanceKind, image: str | None, *, name: str | None,
                 ttl_seconds: int, spares: bool = True) -> tuple[Instance, bool]:
        """`POST /v1/instances`: an instance of `state`, and whether it was made ahead (a warm
        server, or a database copied ahead). A warm server is claimed before the state's runtime
        and image are even resolved: the state's id pins its content, and a claim must stay a few
        milliseconds."""
        if kind == InstanceKind.DATABASE:
            runtime, identity = self.resolve(state, image)
            return self.databases.hand_out(state, runtime, identity, name=name, ttl_seconds=ttl_seconds,
                                           spares=spares)
        claimed = self.warm.claim(state.id, ttl_seconds, name)
        if claimed is not None:
            if spares:
                self.warm.used(state, claimed.runtime, claimed.image)
            return claimed, True
        runtime, identity = self.resolve(state, image)
        made = self.servers.create(state, runtime, identity, name=name, ttl_seconds=ttl_seconds)
        if spares:
            self.warm.used(state, runtime.name, identity.image)
        return made, False

    def ensure_running(self, instance: Instance) -> Instance:
        """The instance, its server restarted when it vanished (a database instance's: its host)."""
        if instance.kind == InstanceKind.DATABASE:
            return self.databases.ensure_running(instance)
        return self.servers.ensure_running(instance)

    def remove(self, instance: Instance) -> None:
        """Remove an instance of any kind and forget it. Idempotent."""
        if instance.kind == InstanceKind.DATABASE:
            self.databases.remove(instance)
        elif instance.kind == InstanceKind.HOST:
            self.databases.remove_host(instance)
        else:
            self.servers.remove(instance)

    def named(self, name: str | None) -> Instance | None:
        """The instance `name` is bound to, if any."""
        binding = self.servers.repo.get_name(name) if name else None
        return self.servers.repo.get_instance(binding.instance_id) if binding is not None else None

    def live_status(self, instance: Instance) -> InstanceStatus:
        return self.servers.live_status(instance)

    def server_of(self, instance: Instance) -> Server:
        return self.servers.server_of(instance)

    def connected_clients(self, instance: Instance) -> list[ClientSession]:
        """The client sessions on the instance's server (its database's, for a database instance);
        none when it is not running or does not answer (then nobody can be using it)."""
        if self.live_status(instance) != InstanceStatus.RUNNING:
            return []
        try:
            return self.servers.admin.client_sessions(
                Path(instance.run_path), instance.port, timeout=2.0,
                database=instance.dbname if instance.kind == InstanceKind.DATABASE else None)
        except Exception as exc:  # a server that does not answer has no usable client
            log.info("instance %s: cannot list its clients: %s", instance.id, exc)
            return []
