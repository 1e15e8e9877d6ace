"""Entities of sqlrs: states, instances, names, jobs and their events.

A *state* is an immutable PostgreSQL data directory identified by a content hash; an *instance* is
a running, mutable copy of one state; a *name* is a user's alias for an instance; a *job* is one
asynchronous prepare request with its *tasks* (one per state in the chain) and *events*.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs


class StateKind(enum.StrEnum):
    BASE = "base"
    PSQL = "psql"
    # saved from a running instance (`sqlrs snapshot`): not reproducible from inputs, so it is
    # never evicted automatically (services/states/cache.py)
    SNAPSHOT = "snapshot"
    ALEMBIC = "alembic"
    EXEC = "exec"
    LIQUIBASE = "liquibase"
    DJANGO = "django"


class InstanceStatus(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    MISSING = "missing"  # the process or container vanished; restarted on next use
    FAILED = "failed"


class InstanceKind(enum.StrEnum):
    SERVER = "server"  # its own PostgreSQL server on a clone of the state: server-level isolation
    DATABASE = "database"  # a database in the state's shared server: database-level isolation
    HOST = "host"  # the shared server of a state that holds its database instances (never handed out)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class TaskStatus(enum.StrEnum):
    CACHED = "cached"
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@attrs.define
class State:
    """An immutable, cached data directory: the base cluster or the result of one more step."""

    id: str
    parent_id: str | None
    base_id: str
    step_hash: str | None
    kind: StateKind
    runtime: str
    source: str  # what produced it, for people: "initdb", a file path, or "-c"
    data_path: str  # relative to the snapshot store root
    size_bytes: int
    build_seconds: float
    created_at: datetime
    last_used_at: datetime
    hits: int = 0


@attrs.define
class UnkeptState:
    """A step's state that a build passed through without keeping it (domain/checkpoints.py).

    It has its identity (`id` = H(parent_id, step_hash)) but no data directory: a build that needs
    it replays it from the nearest kept state before it. It is recorded with the kept state the
    same build kept next (`kept_id`, at `position` among the unkept states between that state and
    its parent), and goes when that state goes.
    """

    id: str
    parent_id: str
    step_hash: str
    kind: StateKind
    source: str
    build_seconds: float
    kept_id: str
    position: int
    created_at: datetime


@attrs.define
class Instance:
    """A running copy of a state with its own server, port and password."""

    id: str
    state_id: str
    runtime: str
    runtime_ref: str  # pid for native, container id for docker/podman
    image: str | None
    host: str
    port: int
    user: str
    password: str
    dbname: str
    data_path: str  # relative to the snapshot store root
    run_path: str  # absolute host path of the socket/log/scripts dir
    status: InstanceStatus
    created_at: datetime
    last_used_at: datetime
    ephemeral: bool = False
    job_id: str | None = None
    name: str | None = None
    ttl_seconds: int = 0  # removed after this many seconds with no client connected; 0: never
    pooled: bool = False  # a warm spare of its state's pool, not handed out yet
    kind: InstanceKind = InstanceKind.SERVER
    host_id: str | None = None  # a database instance: the host instance whose server holds it
    # the process it belongs to (a test run, a library user): removed once that process is gone;
    # the start time (clock ticks since boot) tells the owner from a later process with its pid
    owner_pid: int | None = None
    owner_started: int | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"


@attrs.define
class NameBinding:
    name: str
    instance_id: str
    created_at: datetime


@attrs.define
class Task:
    """One state of a job's chain: the base or a step, cached or to build."""

    job_id: str
    index: int
    kind: str  # "base" | "step" | "instance"
    state_id: str | None
    source: str
    status: TaskStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None


@attrs.define
class Job:
    id: str
    kind: str
    status: JobStatus
    request: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


@attrs.define
class Event:
    job_id: str
    seq: int
    ts: datetime
    type: str
    data: dict[str, Any]
