"""SQLite implementation of the metadata `Repository` port."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import cattrs
from sqlalchemy import Engine, bindparam, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import ExceptionContext, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import BindParameter

from sqlrs.adapters.sqlite import tables as t
from sqlrs.domain.errors import filesystem_full
from sqlrs.domain.model import Event, Instance, Job, NameBinding, State, Task, UnkeptState

T = TypeVar("T")

_converter = cattrs.Converter()
# datetimes come out of UtcDateTime already parsed: keep them as they are
_converter.register_structure_hook(datetime, lambda value, _: value)
_converter.register_unstructure_hook(datetime, lambda value: value)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _disk_full(error: BaseException, directory: Path) -> bool:
    """Did SQLite fail because the filesystem is full? SQLITE_FULL says so; an I/O error does when
    no block is left for anyone (a full filesystem can fail a WAL write either way)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(error):
        return True
    if code == sqlite3.SQLITE_IOERR:
        try:
            return os.statvfs(directory).f_bavail == 0
        except OSError:
            return False
    return False


def create_sqlite_engine(path: Path) -> Engine:
    """An engine on `path` in WAL mode with a busy timeout, usable from several threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if _disk_full(context.original_exception, path.parent):
            raise filesystem_full(str(path.parent)) from context.original_exception

    with engine.connect():
        pass
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(f"{path}{suffix}", 0o600)  # it holds instance passwords
        except FileNotFoundError:
            pass
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (applied at engine start)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# Every statement is built once: SQLAlchemy then reuses its compiled form, where a statement built
# per call spends ~1-3 ms of Python on coercion and cache keys, four times the SQLite work (a cache
# hit writes a dozen job rows and events). Parameters named b_* are the WHERE clause's; an UPDATE
# sets the columns its other parameters name.
_ID: BindParameter[str] = bindparam("b_id")
_PREFIX: BindParameter[str] = bindparam("b_prefix")
_WHEN: BindParameter[datetime] = bindparam("b_when")
_INDEX: BindParameter[int] = bindparam("b_index")
_SEQ: BindParameter[int] = bindparam("b_seq")
_LIMIT: BindParameter[int] = bindparam("b_limit")
_IDS: BindParameter[list[str]] = bindparam("b_ids", expanding=True)
_STATUSES: BindParameter[list[str]] = bindparam("b_statuses", expanding=True)
_INSTANCES = select(t.instances, t.names.c.name).outerjoin(t.names, t.names.c.instance_id == t.instances.c.id)


class _Q:
    """The statements, by what they do (attributes: a misspelt one is a type error)."""

    state = select(t.states).where(t.states.c.id == _ID)
    state_prefix = select(t.states).where(t.states.c.id.like(_PREFIX, escape="\\"))
    states = select(t.states).order_by(t.states.c.created_at)
    child_states = select(t.states).where(t.states.c.parent_id == _ID)
    touch_state = update(t.states).where(t.states.c.id == _ID).values(last_used_at=_WHEN)
    hit_state = update(t.states).where(t.states.c.id == _ID).values(last_used_at=_WHEN, hits=t.states.c.hits + 1)
    delete_state = delete(t.states).where(t.states.c.id == _ID)
    add_state = insert(t.states)
    add_unkept = insert(t.unkept_states)
    unkept = select(t.unkept_states).where(t.unkept_states.c.id.in_(_IDS)).order_by(t.unkept_states.c.created_at)
    unkept_prefix = select(t.unkept_states).where(t.unkept_states.c.id.like(_PREFIX, escape="\\")).order_by(
        t.unkept_states.c.created_at)
    span = select(t.unkept_states).where(t.unkept_states.c.kept_id == _ID).order_by(t.unkept_states.c.position)
    delete_span = delete(t.unkept_states).where(t.unkept_states.c.kept_id == _ID)
    add_instance = insert(t.instances)
    instance = _INSTANCES.where(t.instances.c.id == _ID)
    instance_prefix = _INSTANCES.where(t.instances.c.id.like(_PREFIX, escape="\\"))
    instances = _INSTANCES.order_by(t.instances.c.created_at)
    instances_of = _INSTANCES.where(t.instances.c.state_id == _ID).order_by(t.instances.c.created_at)
    update_instance = update(t.instances).where(t.instances.c.id == _ID)
    delete_instance = delete(t.instances).where(t.instances.c.id == _ID)
    unbind_instance = delete(t.names).where(t.names.c.instance_id == _ID)
    unbind_name = delete(t.names).where(t.names.c.name == _ID)
    bind_name = insert(t.names)
    name = select(t.names).where(t.names.c.name == _ID)
    names = select(t.names).order_by(t.names.c.name)
    add_job = insert(t.jobs)
    job = select(t.jobs).where(t.jobs.c.id == _ID)
    job_prefix = select(t.jobs).where(t.jobs.c.id.like(_PREFIX, escape="\\"))
    jobs = select(t.jobs).order_by(t.jobs.c.created_at)
    update_job = update(t.jobs).where(t.jobs.c.id == _ID)
    finished_jobs_beyond = (select(t.jobs.c.id).where(t.jobs.c.status.in_(_STATUSES))
                            .order_by(t.jobs.c.created_at.desc()).offset(_LIMIT))
    delete_events_of = delete(t.events).where(t.events.c.job_id.in_(_IDS))
    delete_tasks_of = delete(t.tasks).where(t.tasks.c.job_id.in_(_IDS))
    delete_jobs = delete(t.jobs).where(t.jobs.c.id.in_(_IDS))
    delete_tasks = delete(t.tasks).where(t.tasks.c.job_id == _ID)
    add_task = insert(t.tasks)
    update_task = update(t.tasks).where(t.tasks.c.job_id == _ID, t.tasks.c.idx == _INDEX)
    tasks = select(t.tasks).where(t.tasks.c.job_id == _ID).order_by(t.tasks.c.idx)
    last_seq = select(func.max(t.events.c.seq)).where(t.events.c.job_id == _ID)
    add_event = insert(t.events)
    events_after = (select(t.events).where(t.events.c.job_id == _ID, t.events.c.seq > _SEQ)
                    .order_by(t.events.c.seq).limit(_LIMIT))


class SqliteRepository:
    """Metadata in one SQLite file; every method is one transaction."""

    def __init__(self, engine: Engine):
        self._engine = engine

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _row(row: Row[Any] | None, cls: type[T]) -> T | None:
        return None if row is None else _converter.structure(dict(row._mapping), cls)

    @staticmethod
    def _rows(rows: Sequence[Row[Any]], cls: type[T]) -> list[T]:
        return [_converter.structure(dict(row._mapping), cls) for row in rows]

    def _begin(self) -> Any:
        return self._engine.begin()

    def _first(self, query: Executable, **params: Any) -> Row[Any] | None:
        with self._begin() as conn:
            return conn.execute(query, params).first()

    def _all(self, query: Executable, **params: Any) -> Sequence[Row[Any]]:
        with self._begin() as conn:
            return conn.execute(query, params).all()

    def _run(self, query: Executable, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        with self._begin() as conn:
            conn.execute(query, params)

    # -- states ------------------------------------------------------------------------------
    def add_state(self, state: State, span: Sequence[UnkeptState] = ()) -> None:
        try:
            with self._begin() as conn:
                conn.execute(_Q.add_state, _converter.unstructure(state))
                if span:
                    conn.execute(_Q.add_unkept, [_converter.unstructure(unkept) for unkept in span])
        except IntegrityError:
            pass  # committed by someone else first: same id, same content

    def unkept_states(self, state_ids: Sequence[str]) -> dict[str, UnkeptState]:
        found: dict[str, UnkeptState] = {}
        for chunk in range(0, len(state_ids), 500):
            for unkept in self._rows(self._all(_Q.unkept, b_ids=list(state_ids[chunk:chunk + 500])), UnkeptState):
                found.setdefault(unkept.id, unkept)
        return found

    def find_unkept(self, prefix: str) -> list[UnkeptState]:
        found: dict[str, UnkeptState] = {}
        for unkept in self._rows(self._all(_Q.unkept_prefix, b_prefix=_like_prefix(prefix)), UnkeptState):
            found.setdefault(unkept.id, unkept)
        return list(found.values())

    def span_of(self, state_id: str) -> list[UnkeptState]:
        return self._rows(self._all(_Q.span, b_id=state_id), UnkeptState)

    def get_state(self, state_id: str) -> State | None:
        return self._row(self._first(_Q.state, b_id=state_id), State)

    def find_states(self, prefix: str) -> list[State]:
        return self._rows(self._all(_Q.state_prefix, b_prefix=_like_prefix(prefix)), State)

    def list_states(self) -> list[State]:
        return self._rows(self._all(_Q.states), State)

    def child_states(self, state_id: str) -> list[State]:
        return self._rows(self._all(_Q.child_states, b_id=state_id), State)

    def touch_state(self, state_id: str, when: datetime, hit: bool) -> None:
        self._run(_Q.hit_state if hit else _Q.touch_state, {"b_id": state_id, "b_when": when})

    def delete_state(self, state_id: str) -> None:
        with self._begin() as conn:
            conn.execute(_Q.delete_span, {"b_id": state_id})
            conn.execute(_Q.delete_state, {"b_id": state_id})

    # -- instances ---------------------------------------------------------------------------
    def add_instance(self, instance: Instance) -> None:
        values = _converter.unstructure(instance)
        values.pop("name", None)
        self._run(_Q.add_instance, values)

    def get_instance(self, instance_id: str) -> Instance | None:
        return self._row(self._first(_Q.instance, b_id=instance_id), Instance)

    def find_instances(self, prefix: str) -> list[Instance]:
        return self._rows(self._all(_Q.instance_prefix, b_prefix=_like_prefix(prefix)), Instance)

    def list_instances(self, state_id: str | None = None) -> list[Instance]:
        rows = self._all(_Q.instances) if state_id is None else self._all(_Q.instances_of, b_id=state_id)
        return self._rows(rows, Instance)

    def update_instance(self, instance: Instance) -> None:
        values = _converter.unstructure(instance)
        values.pop("name", None)
        values["b_id"] = values.pop("id")
        self._run(_Q.update_instance, values)

    def delete_instance(self, instance_id: str) -> None:
        with self._begin() as conn:
            conn.execute(_Q.unbind_instance, {"b_id": instance_id})
            conn.execute(_Q.delete_instance, {"b_id": instance_id})

    # -- names -------------------------------------------------------------------------------
    def bind_name(self, binding: NameBinding) -> None:
        with self._begin() as conn:
            conn.execute(_Q.unbind_name, {"b_id": binding.name})
            conn.execute(_Q.unbind_instance, {"b_id": binding.instance_id})
            conn.execute(_Q.bind_name, _converter.unstructure(binding))

    def get_name(self, name: str) -> NameBinding | None:
        return self._row(self._first(_Q.name, b_id=name), NameBinding)

    def list_names(self) -> list[NameBinding]:
        return self._rows(self._all(_Q.names), NameBinding)

    # -- jobs, tasks, events -------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        self._run(_Q.add_job, _converter.unstructure(job))

    def get_job(self, job_id: str) -> Job | None:
        return self._row(self._first(_Q.job, b_id=job_id), Job)

    def find_jobs(self, prefix: str) -> list[Job]:
        return self._rows(self._all(_Q.job_prefix, b_prefix=_like_prefix(prefix)), Job)

    def list_jobs(self) -> list[Job]:
        return self._rows(self._all(_Q.jobs), Job)

    def update_job(self, job: Job) -> None:
        values = _converter.unstructure(job)
        values["b_id"] = values.pop("id")
        self._run(_Q.update_job, values)

    def prune_jobs(self, keep: int, finished_statuses: Sequence[str]) -> int:
        with self._begin() as conn:
            doomed = [row[0] for row in conn.execute(
                _Q.finished_jobs_beyond, {"b_statuses": list(finished_statuses), "b_limit": keep}).all()]
            for chunk in range(0, len(doomed), 500):
                ids = doomed[chunk:chunk + 500]
                for query in (_Q.delete_events_of, _Q.delete_tasks_of, _Q.delete_jobs):
                    conn.execute(query, {"b_ids": ids})
        return len(doomed)

    def set_tasks(self, job_id: str, tasks: Sequence[Task]) -> None:
        rows = []
        for task in tasks:
            values = _converter.unstructure(task)
            values["idx"] = values.pop("index")
            rows.append(values)
        with self._begin() as conn:
            conn.execute(_Q.delete_tasks, {"b_id": job_id})
            if rows:
                conn.execute(_Q.add_task, rows)

    def update_task(self, task: Task) -> None:
        self._run(_Q.update_task, self._task_values(task))

    @staticmethod
    def _task_values(task: Task) -> dict[str, Any]:
        values = _converter.unstructure(task)
        values["b_index"] = values.pop("index")
        values["b_id"] = values.pop("job_id")
        return values

    def list_tasks(self, job_id: str) -> list[Task]:
        result = []
        for row in self._all(_Q.tasks, b_id=job_id):
            values = dict(row._mapping)
            values["index"] = values.pop("idx")
            result.append(_converter.structure(values, Task))
        return result

    def append_event(self, job_id: str, type_: str, data: dict[str, Any], when: datetime,
                     task: Task | None = None) -> Event:
        with self._begin() as conn:
            if task is not None:
                conn.execute(_Q.update_task, self._task_values(task))
            seq = int(conn.execute(_Q.last_seq, {"b_id": job_id}).scalar() or 0) + 1
            conn.execute(_Q.add_event, {"job_id": job_id, "seq": seq, "ts": when, "type": type_, "data": data})
        return Event(job_id=job_id, seq=seq, ts=when, type=type_, data=data)

    def events_after(self, job_id: str, seq: int, limit: int = 1000) -> list[Event]:
        return self._rows(self._all(_Q.events_after, b_id=job_id, b_seq=seq, b_limit=limit), Event)
