"""The metadata schema as SQLAlchemy Core tables; Alembic migrations create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes stored as ISO-8601 text (sortable, readable)."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value)


metadata = MetaData()

states = Table(
    "states",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("parent_id", String(64), nullable=True),
    Column("base_id", String(64), nullable=False),
    Column("step_hash", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("runtime", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("data_path", Text, nullable=False),
    Column("size_bytes", Integer, nullable=False, default=0),
    Column("build_seconds", Float, nullable=False, default=0.0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=False),
    Column("hits", Integer, nullable=False, default=0),
    Index("ix_states_parent", "parent_id"),
)

# states a build passed without keeping them (domain/checkpoints.py), recorded with the kept state
# the build kept next: they go when it goes
unkept_states = Table(
    "unkept_states",
    metadata,
    Column("kept_id", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("id", String(64), nullable=False),
    Column("parent_id", String(64), nullable=False),
    Column("step_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("build_seconds", Float, nullable=False, default=0.0),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_unkept_states_id", "id"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("state_id", String(64), nullable=False),
    Column("runtime", String(16), nullable=False),
    Column("runtime_ref", Text, nullable=False),
    Column("image", Text, nullable=True),
    Column("host", String(64), nullable=False),
    Column("port", Integer, nullable=False),
    Column("user", String(64), nullable=False),
    Column("password", String(128), nullable=False),
    Column("dbname", String(64), nullable=False),
    Column("data_path", Text, nullable=False),
    Column("run_path", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime, nullable=False),
    Column("ephemeral", Boolean, nullable=False, default=False),
    Column("job_id", String(64), nullable=True),
    Column("ttl_seconds", Integer, nullable=False, default=0),
    Column("pooled", Boolean, nullable=False, default=False),
    Column("kind", String(16), nullable=False, default="server"),
    Column("host_id", String(64), nullable=True),
    Column("owner_pid", Integer, nullable=True),
    Column("owner_started", BigInteger, nullable=True),
    Index("ix_instances_state", "state_id"),
)

names = Table(
    "names",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("instance_id", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_names_instance", "instance_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("error", JSON, nullable=True),
    Column("result", JSON, nullable=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("state_id", String(64), nullable=True),
    Column("source", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("seconds", Float, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("ts", UtcDateTime, nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", JSON, nullable=False),
)
