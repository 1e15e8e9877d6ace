"""SQLite implementation of the metadata `Repository` port."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import cattrs
from sqlalchemy import Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from sqlrs.adapters.sqlite import tables as t
from sqlrs.domain.model import Event, Instance, Job, NameBinding, State, Task

T = TypeVar("T")

_converter = cattrs.Converter()
# datetimes come out of UtcDateTime already parsed: keep them as they are
_converter.register_structure_hook(datetime, lambda value, _: value)
_converter.register_unstructure_hook(datetime, lambda value: value)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


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

    # -- states ------------------------------------------------------------------------------
    def add_state(self, state: State) -> None:
        values = _converter.unstructure(state)
        with self._begin() as conn:
            try:
                conn.execute(insert(t.states).values(**values))
            except IntegrityError:
                pass  # committed by someone else first: same id, same content

    def get_state(self, state_id: str) -> State | None:
        with self._begin() as conn:
            row = conn.execute(select(t.states).where(t.states.c.id == state_id)).first()
        return self._row(row, State)

    def find_states(self, prefix: str) -> list[State]:
        with self._begin() as conn:
            rows = conn.execute(
                select(t.states).where(t.states.c.id.like(_like_prefix(prefix), escape="\\"))
            ).all()
        return self._rows(rows, State)

    def list_states(self) -> list[State]:
        with self._begin() as conn:
            rows = conn.execute(select(t.states).order_by(t.states.c.created_at)).all()
        return self._rows(rows, State)

    def child_states(self, state_id: str) -> list[State]:
        with self._begin() as conn:
            rows = conn.execute(select(t.states).where(t.states.c.parent_id == state_id)).all()
        return self._rows(rows, State)

    def touch_state(self, state_id: str, when: datetime, hit: bool) -> None:
        values: dict[str, Any] = {"last_used_at": when}
        if hit:
            values["hits"] = t.states.c.hits + 1
        with self._begin() as conn:
            conn.execute(update(t.states).where(t.states.c.id == state_id).values(**values))

    def delete_state(self, state_id: str) -> None:
        with self._begin() as conn:
            conn.execute(delete(t.states).where(t.states.c.id == state_id))

    # -- instances ---------------------------------------------------------------------------
    def _instance_query(self) -> Any:
        return select(t.instances, t.names.c.name).outerjoin(
            t.names, t.names.c.instance_id == t.instances.c.id
        )

    def add_instance(self, instance: Instance) -> None:
        values = _converter.unstructure(instance)
        values.pop("name", None)
        with self._begin() as conn:
            conn.execute(insert(t.instances).values(**values))

    def get_instance(self, instance_id: str) -> Instance | None:
        with self._begin() as conn:
            row = conn.execute(self._instance_query().where(t.instances.c.id == instance_id)).first()
        return self._row(row, Instance)

    def find_instances(self, prefix: str) -> list[Instance]:
        with self._begin() as conn:
            rows = conn.execute(
                self._instance_query().where(t.instances.c.id.like(_like_prefix(prefix), escape="\\"))
            ).all()
        return self._rows(rows, Instance)

    def list_instances(self, state_id: str | None = None) -> list[Instance]:
        query = self._instance_query().order_by(t.instances.c.created_at)
        if state_id is not None:
            query = query.where(t.instances.c.state_id == state_id)
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return self._rows(rows, Instance)

    def update_instance(self, instance: Instance) -> None:
        values = _converter.unstructure(instance)
        values.pop("name", None)
        instance_id = values.pop("id")
        with self._begin() as conn:
            conn.execute(update(t.instances).where(t.instances.c.id == instance_id).values(**values))

    def delete_instance(self, instance_id: str) -> None:
        with self._begin() as conn:
            conn.execute(delete(t.names).where(t.names.c.instance_id == instance_id))
            conn.execute(delete(t.instances).where(t.instances.c.id == instance_id))

    # -- names -------------------------------------------------------------------------------
    def bind_name(self, binding: NameBinding) -> None:
        with self._begin() as conn:
            conn.execute(delete(t.names).where(t.names.c.name == binding.name))
            conn.execute(delete(t.names).where(t.names.c.instance_id == binding.instance_id))
            conn.execute(insert(t.names).values(**_converter.unstructure(binding)))

    def get_name(self, name: str) -> NameBinding | None:
        with self._begin() as conn:
            row = conn.execute(select(t.names).where(t.names.c.name == name)).first()
        return self._row(row, NameBinding)

    def list_names(self) -> list[NameBinding]:
        with self._begin() as conn:
            rows = conn.execute(select(t.names).order_by(t.names.c.name)).all()
        return self._rows(rows, NameBinding)

    # -- jobs, tasks, events -------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        with self._begin() as conn:
            conn.execute(insert(t.jobs).values(**_converter.unstructure(job)))

    def get_job(self, job_id: str) -> Job | None:
        with self._begin() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return self._row(row, Job)

    def find_jobs(self, prefix: str) -> list[Job]:
        with self._begin() as conn:
            rows = conn.execute(select(t.jobs).where(t.jobs.c.id.like(_like_prefix(prefix), escape="\\"))).all()
        return self._rows(rows, Job)

    def list_jobs(self) -> list[Job]:
        with self._begin() as conn:
            rows = conn.execute(select(t.jobs).order_by(t.jobs.c.created_at)).all()
        return self._rows(rows, Job)

    def update_job(self, job: Job) -> None:
        values = _converter.unstructure(job)
        job_id = values.pop("id")
        with self._begin() as conn:
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))

    def prune_jobs(self, keep: int, finished_statuses: Sequence[str]) -> int:
        with self._begin() as conn:
            doomed = [row[0] for row in conn.execute(
                select(t.jobs.c.id).where(t.jobs.c.status.in_(list(finished_statuses)))
                .order_by(t.jobs.c.created_at.desc()).offset(keep)
            ).all()]
            for chunk in range(0, len(doomed), 500):
                ids = doomed[chunk:chunk + 500]
                conn.execute(delete(t.events).where(t.events.c.job_id.in_(ids)))
                conn.execute(delete(t.tasks).where(t.tasks.c.job_id.in_(ids)))
                conn.execute(delete(t.jobs).where(t.jobs.c.id.in_(ids)))
        return len(doomed)

    def set_tasks(self, job_id: str, tasks: Sequence[Task]) -> None:
        with self._begin() as conn:
            conn.execute(delete(t.tasks).where(t.tasks.c.job_id == job_id))
            for task in tasks:
                values = _converter.unstructure(task)
                values["idx"] = values.pop("index")
                conn.execute(insert(t.tasks).values(**values))

    def update_task(self, task: Task) -> None:
        values = _converter.unstructure(task)
        index = values.pop("index")
        job_id = values.pop("job_id")
        with self._begin() as conn:
            conn.execute(
                update(t.tasks).where(t.tasks.c.job_id == job_id, t.tasks.c.idx == index).values(**values)
            )

    def list_tasks(self, job_id: str) -> list[Task]:
        with self._begin() as conn:
            rows = conn.execute(select(t.tasks).where(t.tasks.c.job_id == job_id).order_by(t.tasks.c.idx)).all()
        result = []
        for row in rows:
            values = dict(row._mapping)
            values["index"] = values.pop("idx")
            result.append(_converter.structure(values, Task))
        return result

    def append_event(self, job_id: str, type_: str, data: dict[str, Any], when: datetime) -> Event:
        with self._begin() as conn:
            seq = self._next_seq(conn, job_id)
            conn.execute(insert(t.events).values(job_id=job_id, seq=seq, ts=when, type=type_, data=data))
        return Event(job_id=job_id, seq=seq, ts=when, type=type_, data=data)

    @staticmethod
    def _next_seq(conn: Connection, job_id: str) -> int:
        current = conn.execute(select(func.max(t.events.c.seq)).where(t.events.c.job_id == job_id)).scalar()
        return int(current or 0) + 1

    def events_after(self, job_id: str, seq: int, limit: int = 1000) -> list[Event]:
        with self._begin() as conn:
            rows = conn.execute(
                select(t.events)
                .where(t.events.c.job_id == job_id, t.events.c.seq > seq)
                .order_by(t.events.c.seq)
                .limit(limit)
            ).all()
        return self._rows(rows, Event)
