"""The Python library's public types: its errors, `State`, `RunResult` and `Instance`
(imported from `sqlrs`; see docs/python-api.md). An Instance acts through the Client that made it,
which it knows as an `InstanceOperations` (the Client sits above these types, not beside them)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlrs.engine_client.errors import EXIT_ENGINE, EXIT_NOT_FOUND, EXIT_USAGE, ClientError

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

StrPath = str | os.PathLike[str]
Seconds = int | float | timedelta


# -- errors ------------------------------------------------------------------------------------------
class Error(Exception):
    """Anything sqlrs refused or failed to do. `exit_code` is what the CLI would exit with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    @property
    def context(self) -> list[str]:
        """The lines under the message, as psql prints them under an error: a failed step's
        `LINE n:` and caret, DETAIL, HINT and, for host steps, the failing statement."""
        lines = self.details.get("context")
        return [str(line) for line in lines] if isinstance(lines, list) else []

    def __str__(self) -> str:
        context = self.context
        if not context:
            return self.message + (f" (hint: {self.hint})" if self.hint else "")
        return "\n".join([self.message, *context, *([f"hint: {self.hint}"] if self.hint else [])])


class UsageError(Error):
    """Bad arguments: a missing file, a connection flag, an unknown option (CLI exit 2)."""

    exit_code = EXIT_USAGE


class EngineUnavailable(Error):
    """The engine could not be reached, started, or is of another major version (CLI exit 3)."""

    exit_code = EXIT_ENGINE


class NotFoundError(Error):
    """No such instance, state or pool (CLI exit 4)."""

    exit_code = EXIT_NOT_FOUND


class OperationFailed(Error):
    """The engine tried and failed: a SQL step failed (details name the file and line), a server
    did not start, a tool exited non-zero when asked to `check()` (CLI exit 1)."""


@dataclass(frozen=True)
class DowngradeReport:
    """What `Client.check_downgrades` (Alembic) or `Client.check_backwards` (Django) found: one
    entry per step of the chain, in its order, with its name (`revision`: an Alembic revision id;
    `migration`: APP.NAME), `parent` (the step before it; None: the base), `restores` and
    `differences` (one line each)."""

    revisions: list[dict[str, Any]]
    noun: str = "revision"  # the entries' key for a step's name: "revision" or "migration"

    @property
    def migrations(self) -> list[dict[str, Any]]:
        """The entries, as Django calls them (the same list as `revisions`)."""
        return self.revisions

    @property
    def restores(self) -> bool:
        """True when every undo restored its parent's state."""
        return all(revision["restores"] for revision in self.revisions)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [revision for revision in self.revisions if not revision["restores"]]

    def __str__(self) -> str:
        from sqlrs.engine_client.reversals import result_line

        return "\n".join(result_line(revision) for revision in self.revisions)


def _convert(error: ClientError) -> Error:
    kind: type[Error] = {EXIT_USAGE: UsageError, EXIT_ENGINE: EngineUnavailable,
                         EXIT_NOT_FOUND: NotFoundError}.get(error.exit_code, OperationFailed)
    return kind(error.message, error.hint, error.details)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise _convert(exc) from None


def _owner() -> dict[str, int] | None:
    """This process as the owner of what it creates (the engine removes it once we are gone)."""
    from sqlrs.procfs import own_identity

    identity = own_identity()
    return None if identity is None else {"pid": identity[0], "started": identity[1]}


def _seconds(value: Seconds | None) -> int | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise UsageError("a TTL must not be negative")
    return round(seconds)


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """A cached state: the result of a chain of steps, ready to start instances from."""

    id: str
    runtime: str
    image: str | None = None

    def __str__(self) -> str:
        return self.id


@dataclass
class RunResult:
    """What `psql`/`pgbench` printed and how it exited."""

    exit_code: int
    stdout: str
    stderr: str
    error: str | None = None  # the engine's message when it could not run the tool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> RunResult:
        """Return self, or raise OperationFailed with the tool's stderr when it failed."""
        if self.exit_code != 0:
            raise OperationFailed(self.error or f"exited with {self.exit_code}: {self.stderr.strip()}",
                                  details={"exit_code": self.exit_code, "stdout": self.stdout,
                                           "stderr": self.stderr})
        return self


@dataclass
class Instance:
    """A running PostgreSQL server started from a state: connect with `dsn` (or `connect()`).

    Usable as a context manager: the instance is removed when the block ends.
    """

    id: str
    state_id: str
    dsn: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    runtime: str
    name: str | None = None
    ttl_seconds: int = 0
    expires_in_seconds: float | None = None
    connections: int | None = None
    pooled: bool = False
    from_pool: bool = False  # handed out ready-made: a warm server, or a database copied ahead (create_instance)
    kind: str = "server"  # "server": a server of its own; "database": a database in a shared server
    engine_seconds: float | None = None  # how long the engine took to hand it out
    client: InstanceOperations | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], client: InstanceOperations | None = None) -> Instance:
        return cls(
            id=str(data["id"]), state_id=str(data["state_id"]), dsn=str(data["dsn"]),
            host=str(data.get("host", "127.0.0.1")), port=int(data.get("port", 0)),
            user=str(data.get("user", "")), password=str(data.get("password", "")),
            dbname=str(data.get("dbname", "postgres")), runtime=str(data.get("runtime", "")),
            name=data.get("name"), ttl_seconds=int(data.get("ttl_seconds") or 0),
            expires_in_seconds=data.get("expires_in_seconds"), connections=data.get("connections"),
            pooled=bool(data.get("pooled", False)), from_pool=bool(data.get("from_pool", False)),
            engine_seconds=data.get("seconds"), kind=str(data.get("kind", "server")), client=client,
        )

    # connection facts ---------------------------------------------------------------------------
    @property
    def conninfo(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect / asyncpg.connect and friends."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password,
                "dbname": self.dbname}

    @property
    def env(self) -> dict[str, str]:
        """libpq environment variables (PGHOST, PGPORT, ...) for tools run as subprocesses."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGPASSWORD": self.password,
                "PGDATABASE": self.dbname}

    def url(self, driver: str | None = "psycopg") -> str:
        """The instance as a SQLAlchemy URL, `postgresql+DRIVER://USER:PASSWORD@HOST:PORT/DBNAME`,
        for `create_engine` (and `create_async_engine`: `psycopg` is async there too, or take
        `asyncpg`). `driver=None` gives plain `postgresql://` (SQLAlchemy maps it to psycopg2)."""
        from urllib.parse import quote

        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return (f"{scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
                f"{quote(self.dbname, safe='')}")

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg 3 connection to the instance (keyword arguments go to psycopg.connect)."""
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)

    # operations ---------------------------------------------------------------------------------
    def _client(self) -> InstanceOperations:
        if self.client is None:
            raise UsageError("this Instance is not attached to a Client")
        return self.client

    def psql(self, *args: str, input: str | None = None, on_output: OutputCallback | None = None) -> RunResult:
        """Run psql against the instance inside sqlrs (`-c SQL`, `-f FILE`, `-v`, ...)."""
        return self._client().run_psql(self, *args, input=input, on_output=on_output)

    def pgbench(self, *args: str, on_output: OutputCallback | None = None) -> RunResult:
        return self._client().run_pgbench(self, *args, on_output=on_output)

    def set_ttl(self, ttl: Seconds) -> Instance:
        """Change the idle TTL (0: keep until removed); returns the refreshed instance."""
        return self._client().set_ttl(self, ttl)

    def keep(self) -> Instance:
        """Keep the instance until someone removes it (drops its TTL, and it no longer goes away
        with this process)."""
        return self._client().keep(self)

    def refresh(self) -> Instance:
        return self._client().get_instance(self.id)

    def remove(self) -> bool:
        """Stop and delete the instance; False when it was already gone."""
        return self._client().remove(self)

    def snapshot(self, name: str | None = None) -> State:
        """Save the instance's current data as a new state (it keeps running); see Client.snapshot."""
        return self._client().snapshot(self, name=name)

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


OutputCallback = Callable[[str, str], None]  # (stream "stdout"|"stderr", text)


class InstanceOperations(Protocol):
    """What an Instance asks of the Client that made it (sqlrs.Client is one)."""

    def run_psql(self, instance: Instance | str, *args: str, input: str | None = None,
                 on_output: OutputCallback | None = None) -> RunResult: ...

    def run_pgbench(self, instance: Instance | str, *args: str,
                    on_output: OutputCallback | None = None) -> RunResult: ...

    def set_ttl(self, instance: Instance | str, ttl: Seconds) -> Instance: ...

    def keep(self, instance: Instance | str) -> Instance: ...

    def get_instance(self, ref: str) -> Instance: ...

    def remove(self, instance: Instance | str) -> bool: ...

    def snapshot(self, instance: Instance | str, name: str | None = None) -> State: ...
