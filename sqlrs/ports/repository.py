"""The metadata repository ports, one per concept: the states (kept, and the unkept ones a build
passed), the instances with their names, and the job log (jobs, their tasks and events). The
SQLite adapter implements all three (`Repository`); each service depends on the one it uses.

Every method is its own transaction unless noted. Ids may be looked up by unique prefix with
`find_*`, which returns all matches so the caller can report ambiguity.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlrs.domain.model import Event, Instance, Job, NameBinding, State, Task, UnkeptState


class StateRepository(Protocol):
    """Kept states (a row per state whose data directory is in the store) and the unkept states
    recorded with them (domain/checkpoints.py)."""

    def add_state(self, state: State, span: Sequence[UnkeptState] = ()) -> None:
        """Insert a committed state with the unkept states its build passed since its parent
        (`span`, in chain order); a second insert of the same id is ignored."""
        ...

    def unkept_states(self, state_ids: Sequence[str]) -> dict[str, UnkeptState]:
        """The unkept states among `state_ids` that some build passed, by id (the oldest record)."""
        ...

    def span_of(self, state_id: str) -> list[UnkeptState]:
        """The unkept states between the kept state `state_id` and its parent, in chain order."""
        ...

    def find_unkept(self, prefix: str) -> list[UnkeptState]:
        """The unkept states whose id starts with `prefix`, one record per id (the oldest)."""
        ...

    def get_state(self, state_id: str) -> State | None: ...
    def find_states(self, prefix: str) -> list[State]: ...
    def list_states(self) -> list[State]: ...
    def child_states(self, state_id: str) -> list[State]: ...
    def touch_state(self, state_id: str, when: datetime, hit: bool) -> None:
        """Record a use of the state (and a cache hit when `hit`)."""
        ...

    def delete_state(self, state_id: str) -> None:
        """Delete the state's row and the unkept states recorded with it."""
        ...



class InstanceRepository(Protocol):
    """Instances of every kind, and the names bound to them."""

    def add_instance(self, instance: Instance) -> None: ...
    def get_instance(self, instance_id: str) -> Instance | None: ...
    def find_instances(self, prefix: str) -> list[Instance]: ...
    def list_instances(self, state_id: str | None = None) -> list[Instance]: ...
    def update_instance(self, instance: Instance) -> None: ...
    def delete_instance(self, instance_id: str) -> None:
        """Delete the instance and any name bound to it."""
        ...

    def bind_name(self, binding: NameBinding) -> None:
        """Bind (or rebind) a name to an instance."""
        ...

    def get_name(self, name: str) -> NameBinding | None: ...
    def list_names(self) -> list[NameBinding]: ...



class JobLog(Protocol):
    """Jobs, the tasks of each (the states it plans, builds or pulls) and their events."""

    def add_job(self, job: Job) -> None: ...
    def get_job(self, job_id: str) -> Job | None: ...
    def find_jobs(self, prefix: str) -> list[Job]: ...
    def list_jobs(self) -> list[Job]: ...
    def update_job(self, job: Job) -> None: ...
    def prune_jobs(self, keep: int, finished_statuses: Sequence[str]) -> int:
        """Delete the oldest finished jobs (with tasks and events) beyond the newest `keep`."""
        ...

    def set_tasks(self, job_id: str, tasks: Sequence[Task]) -> None:
        """Replace the job's task list."""
        ...

    def update_task(self, task: Task) -> None: ...
    def list_tasks(self, job_id: str) -> list[Task]: ...
    def append_event(self, job_id: str, type_: str, data: dict[str, Any], when: datetime,
                     task: Task | None = None) -> Event:
        """Append an event with the next sequence number of the job (starting at 1); with `task`,
        record the task's new fields in the same transaction (a step's progress and its event:
        one write, not two, per change of a build's hundreds of steps)."""
        ...

    def events_after(self, job_id: str, seq: int, limit: int = 1000) -> list[Event]: ...


class StatesAndInstances(StateRepository, InstanceRepository, Protocol):
    """The states and the instances made from them (an instance records its state's use): what the
    state catalog and the instance services read."""


class Repository(StatesAndInstances, JobLog, Protocol):
    """All of the metadata: what an adapter implements (adapters/sqlite, tests/fakes.py)."""
