"""Finding, listing and removing states, instances, names and jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlrs.domain.errors import Ambiguous, Conflict, InUse, NotFound
from sqlrs.domain.model import Instance, InstanceKind, InstanceStatus, Job, State, TaskStatus
from sqlrs.ports.admin import ClientSession
from sqlrs.ports.repository import Repository
from sqlrs.ports.snapshots import SnapshotStore
from sqlrs.services.instances import InstanceManager
from sqlrs.services.layout import Layout
from sqlrs.services.locks import StateLocks
from sqlrs.services.requests import NAME_RE, check_id
from sqlrs.services.serde import json_converter

log = logging.getLogger("sqlrs.inventory")


def _one(matches: list[Any], what: str, ref: str) -> Any:
    if not matches:
        raise NotFound(f"no {what} matches {ref!r}", hint=f"list them with: sqlrs ls --{what}s")
    if len(matches) > 1:
        raise Ambiguous(
            f"{ref!r} matches {len(matches)} {what}s", details={"candidates": sorted(m.id for m in matches)},
            hint="give more characters of the id",
        )
    return matches[0]


class Inventory:
    def __init__(self, repo: Repository, store: SnapshotStore, layout: Layout, instances: InstanceManager,
                 active_jobs: Callable[[], set[str]], locks: StateLocks | None = None):
        self.locks = locks or StateLocks()
        self.repo = repo
        self.store = store
        self.layout = layout
        self.instances = instances
        self._active_jobs = active_jobs  # () -> set of running job ids

    # -- lookups -----------------------------------------------------------------------------
    def find_instance(self, ref: str) -> tuple[Instance, bool]:
        """(instance, resolved_by_name). Exact id, then name, then unique id prefix."""
        exact = self.repo.get_instance(ref) if len(ref) <= 64 else None
        if exact is not None:
            return exact, False
        if NAME_RE.match(ref):
            binding = self.repo.get_name(ref)
            if binding is not None:
                instance = self.repo.get_instance(binding.instance_id)
                if instance is not None:
                    return instance, True
        if not all(c in "0123456789abcdef" for c in ref):
            raise NotFound(f"no instance or name matches {ref!r}", hint="list them with: sqlrs ls --instances")
        return _one(self.repo.find_instances(check_id(ref)), "instance", ref), False

    def find_state(self, ref: str) -> State:
        check_id(ref, "state id")
        exact = self.repo.get_state(ref)
        return exact if exact is not None else _one(self.repo.find_states(ref), "state", ref)

    def find_job(self, ref: str) -> Job:
        check_id(ref, "job id")
        exact = self.repo.get_job(ref)
        return exact if exact is not None else _one(self.repo.find_jobs(ref), "job", ref)

    # -- listings ----------------------------------------------------------------------------
    def instance_json(self, instance: Instance, live: bool = True) -> dict[str, Any]:
        status = self.instances.live_status(instance).value if live else instance.status.value
        return {
            "id": instance.id, "state_id": instance.state_id, "name": instance.name, "dsn": instance.dsn,
            "runtime": instance.runtime, "status": status, "host": instance.host, "port": instance.port,
            "user": instance.user, "password": instance.password, "dbname": instance.dbname,
            "image": instance.image, "ephemeral": instance.ephemeral, "job_id": instance.job_id,
            "ttl_seconds": instance.ttl_seconds, "pooled": instance.pooled, "kind": instance.kind.value,
            "host_id": instance.host_id,
            "created_at": json_converter.unstructure(instance.created_at),
            "last_used_at": json_converter.unstructure(instance.last_used_at),
        }

    def state_json(self, state: State, counts: dict[str, int] | None = None) -> dict[str, Any]:
        data = json_converter.unstructure(state)
        data["instances"] = (counts or {}).get(state.id, 0) if counts is not None else len(
            self.user_instances(state.id))
        data.pop("data_path", None)
        return data

    def list_states(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        for instance in self.user_instances():
            counts[instance.state_id] = counts.get(instance.state_id, 0) + 1
        return [self.state_json(state, counts) for state in self.repo.list_states()]

    def user_instances(self, state_id: str | None = None) -> list[Instance]:
        """Instances users were handed: not the engine's own (warm instances, and the shared
        servers that hold database instances)."""
        return [i for i in self.repo.list_instances(state_id) if i.kind != InstanceKind.HOST and not i.pooled]

    def list_instances(self, warm: bool = False) -> list[dict[str, Any]]:
        """User instances; with `warm`, the warm instances too (never the shared servers)."""
        return [self.instance_json(instance) for instance in self.repo.list_instances()
                if instance.kind != InstanceKind.HOST and (warm or not instance.pooled)]

    def job_json(self, job: Job, with_tasks: bool = False) -> dict[str, Any]:
        data = json_converter.unstructure(job)
        data.pop("request", None)
        if with_tasks:
            data["tasks"] = [json_converter.unstructure(task) for task in self.repo.list_tasks(job.id)]
        return data

    def list_jobs(self) -> list[dict[str, Any]]:
        return [self.job_json(job) for job in self.repo.list_jobs()]

    # -- removal -----------------------------------------------------------------------------
    def remove_instance(self, instance: Instance, dry_run: bool, force: bool = True) -> dict[str, Any]:
        """Remove an instance; without `force`, refuse (InUse) while clients are connected to it.

        A dry run does not raise: it lists what would be refused under `refused`.
        """
        removed = [{"kind": "instance", "id": instance.id, "name": instance.name}]
        if not force:
            clients = [session.to_json() for session in self.connected_clients(instance)]
            if clients and dry_run:
                return {"dry_run": True, "removed": [], "refused": [{**removed[0], "clients": clients}]}
            if clients:
                raise InUse(f"instance {instance.id} has {len(clients)} client(s) connected",
                            hint="disconnect them, or remove it anyway with --force",
                            details={"instance_id": instance.id, "clients": clients})
        if not dry_run:
            self.instances.remove(instance)
        return {"dry_run": dry_run, "removed": removed}

    def connected_clients(self, instance: Instance) -> list[ClientSession]:
        """The client sessions on the instance's server; none when it is not running or does
        not answer (then nobody can be using it)."""
        if self.instances.live_status(instance) != InstanceStatus.RUNNING:
            return []
        try:
            return self.instances.admin.client_sessions(
                Path(instance.run_path), instance.port, timeout=2.0,
                database=instance.dbname if instance.kind == InstanceKind.DATABASE else None)
        except Exception as exc:  # a server that does not answer has no usable client
            log.info("instance %s: cannot list its clients: %s", instance.id, exc)
            return []

    def _descendants(self, state: State) -> list[State]:
        """`state` and every state built on it, children before parents."""
        ordered: list[State] = []
        for child in self.repo.child_states(state.id):
            ordered.extend(self._descendants(child))
        ordered.append(state)
        return ordered

    def _jobs_using(self, state_ids: set[str]) -> list[str]:
        users = []
        for job_id in self._active_jobs():
            for task in self.repo.list_tasks(job_id):
                if task.state_id in state_ids and task.status in (TaskStatus.CACHED, TaskStatus.RUNNING,
                                                                  TaskStatus.DONE, TaskStatus.PENDING):
                    users.append(job_id)
                    break
        return users

    def remove_state(self, state: State, *, recurse: bool, force: bool, dry_run: bool) -> dict[str, Any]:
        states = self._descendants(state)
        ids = {s.id for s in states}
        # warm instances are not the user's: removing the state removes them (standby.discard)
        instances = [i for i in self.user_instances() if i.state_id in ids]
        hosts = [i for i in self.repo.list_instances() if i.state_id in ids and i.kind == InstanceKind.HOST]
        children = [s for s in states if s.id != state.id]
        if (children or instances) and not recurse:
            raise Conflict(
                f"state {state.id[:12]} has {len(children)} dependent state(s) and {len(instances)} instance(s)",
                hint="remove them too with --recurse (see what would go with --dry-run)",
                details={"states": sorted(s.id for s in children), "instances": sorted(i.id for i in instances)},
            )
        users = self._jobs_using(ids)
        if users and not force:
            raise Conflict(f"state {state.id[:12]} is in use by running job(s) {', '.join(users)}",
                           hint="wait for them, or use --force")
        removed = [{"kind": "instance", "id": i.id, "name": i.name} for i in instances]
        removed += [{"kind": "state", "id": s.id, "name": None} for s in states]
        if dry_run:
            return {"dry_run": dry_run, "removed": removed}
        for instance in [*instances, *hosts]:  # database instances before the shared server holding them
            self.instances.remove(instance)
        for doomed in states:
            lock = self.locks.get(doomed.id)
            # a job that reached this state holds its lock while it checks or builds on it
            if not lock.acquire(timeout=0 if not force else 60):
                raise Conflict(f"state {doomed.id[:12]} is in use by a running job", hint="try again, or --force")
            try:
                self.repo.delete_state(doomed.id)  # invisible first, then the data goes
                if self.instances.standby is not None:
                    self.instances.standby.discard(doomed.id)
                self.store.delete(self.layout.abs(doomed.data_path))
            finally:
                lock.release()
        return {"dry_run": dry_run, "removed": removed}
