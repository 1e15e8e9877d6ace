"""Finding, listing and removing states, instances, names and jobs (`ls`, `rm`, the API's GETs).
Instances go through services/instances/kinds.py, states through the catalog (StateCatalog.remove)."""

from __future__ import annotations

from typing import Any

from sqlrs.domain.errors import Conflict, InUse, NotFound, UsageError
from sqlrs.domain.model import Instance, InstanceKind, Job, State
from sqlrs.ports.repository import Repository
from sqlrs.services.instances.kinds import Instances
from sqlrs.services.requests import NAME_RE, check_id, one_match
from sqlrs.services.serde import json_converter
from sqlrs.services.states.catalog import StateCatalog


class Inventory:
    def __init__(self, repo: Repository, catalog: StateCatalog, instances: Instances):
        self.repo = repo  # all of it: the listings show states, instances, names and jobs
        self.catalog = catalog
        self.instances = instances

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
        return one_match(self.repo.find_instances(check_id(ref)), "instance", ref), False

    def find_state(self, ref: str) -> State:
        check_id(ref, "state id")
        return self.catalog.find(ref)

    def state_of(self, ref: str) -> State:
        """A state by id (prefix), or the state of an instance (by id or name): what `push` takes."""
        instance: Instance | None
        try:
            instance, _ = self.find_instance(ref)
        except (NotFound, UsageError):
            if not all(c in "0123456789abcdef" for c in ref):
                raise NotFound(f"no state, instance or name matches {ref!r}",
                               hint="list them with: sqlrs ls --states, sqlrs ls --instances") from None
            instance = None
        if instance is not None:
            state = self.repo.get_state(instance.state_id)
            if state is None:
                raise NotFound(f"the state of instance {instance.id} is gone")
            return state
        return self.find_state(ref)

    def find_job(self, ref: str) -> Job:
        check_id(ref, "job id")
        exact = self.repo.get_job(ref)
        return exact if exact is not None else one_match(self.repo.find_jobs(ref), "job", ref)

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
            clients = [session.to_json() for session in self.instances.connected_clients(instance)]
            if clients and dry_run:
                return {"dry_run": True, "removed": [], "refused": [{**removed[0], "clients": clients}]}
            if clients:
                raise InUse(f"instance {instance.id} has {len(clients)} client(s) connected",
                            hint="disconnect them, or remove it anyway with --force",
                            details={"instance_id": instance.id, "clients": clients})
        if not dry_run:
            self.instances.remove(instance)
        return {"dry_run": dry_run, "removed": removed}

    def remove_state(self, state: State, *, recurse: bool, force: bool, dry_run: bool) -> dict[str, Any]:
        states = self.catalog.descendants(state)
        ids = {s.id for s in states}
        # warm instances are not the user's: removing the state removes them (StateCatalog.remove)
        instances = [i for i in self.user_instances() if i.state_id in ids]
        hosts = [i for i in self.repo.list_instances() if i.state_id in ids and i.kind == InstanceKind.HOST]
        children = [s for s in states if s.id != state.id]
        if (children or instances) and not recurse:
            raise Conflict(
                f"state {state.id[:12]} has {len(children)} dependent state(s) and {len(instances)} instance(s)",
                hint="remove them too with --recurse (see what would go with --dry-run)",
                details={"states": sorted(s.id for s in children), "instances": sorted(i.id for i in instances)},
            )
        users = self.catalog.users().jobs_using(ids)
        if users and not force:
            raise Conflict(f"state {state.id[:12]} is in use by running job(s) {', '.join(users)}",
                           hint="wait for them, or use --force")
        removed = [{"kind": "instance", "id": i.id, "name": i.name} for i in instances]
        removed += [{"kind": "state", "id": s.id, "name": None} for s in states]
        if dry_run:
            return {"dry_run": dry_run, "removed": removed}
        for instance in [*instances, *hosts]:  # database instances before the shared server holding them
            self.instances.remove(instance)
        for doomed in states:  # a job that reached a state holds its lock while it checks or builds on it
            self.catalog.remove(doomed.id, wait=60 if force else 0)
        return {"dry_run": dry_run, "removed": removed}
