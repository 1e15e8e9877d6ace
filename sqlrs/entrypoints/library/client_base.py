"""The Client's plumbing: its settings, the engine connection, and reading a chain into a
prepare job's request body (`client_chains.py`) and following that job (sqlrs.engine_client.jobs).
`client.py` builds `sqlrs.Client` on it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sqlrs.entrypoints.library.client_chains import ChainOrigin, request_body
from sqlrs.entrypoints.library.client_types import State, StrPath, UsageError, _translated

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.engine_client.connection import EngineClient


class ClientBase:
    """The plumbing of sqlrs.Client (its settings are documented there)."""

    def __init__(
        self,
        state_dir: StrPath | None = None,
        *,
        runtime: str | None = None,
        image: str | None = None,
        base_dir: StrPath | None = None,
        workspace: StrPath | None = None,
        allow_outside: bool = False,
        spawn: bool = True,
        postgres_version: str | int | None = None,
    ):
        if runtime is not None:
            from sqlrs import extensions

            known = ("auto", *extensions.names(extensions.RUNTIMES))
            if runtime not in known:
                raise UsageError(f"unknown runtime {runtime!r}", hint="use one of: " + ", ".join(known))
        if postgres_version is not None:
            from sqlrs.engine_client.workspace import check_version

            with _translated():
                postgres_version = check_version(str(postgres_version), "postgres_version")
        self.postgres_version = postgres_version
        self._state_dir = Path(state_dir).absolute() if state_dir is not None else None
        self.runtime = runtime
        self.image = image
        self.base_dir = Path(base_dir).absolute() if base_dir is not None else None
        self.workspace_root = Path(workspace).absolute() if workspace is not None else None
        self.allow_outside = allow_outside
        self.spawn = spawn
        self._engine: EngineClient | None = None
        self._lock = threading.Lock()
        self._auto_kind: str | None = None  # what kind="auto" stands for on this engine's store
        self._server_only: set[str] = set()  # states a database instance cannot copy (several databases)


    # plumbing -----------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir

            self._state_dir = default_state_dir()
        return self._state_dir

    @property
    def engine(self) -> EngineClient:
        """The HTTP client for the engine (sqlrs.engine_client; found or spawned on first use)."""
        with self._lock:
            if self._engine is None:
                from sqlrs.engine_client.connection import connect

                with _translated():
                    self._engine = connect(self.state_dir, spawn=self.spawn)
            return self._engine

    def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = 300.0) -> Any:
        """One JSON request to the engine API (see the OpenAPI document); errors raise Error."""
        with _translated():
            return self.engine.call(method, path, body, timeout=timeout)

    @property
    def _origin(self) -> ChainOrigin:
        """Where this client's chains are read (its settings)."""
        return ChainOrigin(self.runtime, self.image, self.base_dir, self.workspace_root, self.allow_outside,
                           self.state_dir / "config.json")

    def close(self) -> None:
        """Forget the engine connection (nothing is held open between requests)."""
        with self._lock:
            self._engine = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


    # chains -------------------------------------------------------------------------------------
    def _body(self, files: Iterable[StrPath] | StrPath, sql: Iterable[str] | str,
              variables: Mapping[str, Any] | None, single_transaction: bool, psql_args: Sequence[str],
              host: Mapping[str, Any], from_state: State | str | None = None) -> dict[str, Any]:
        body = request_body(self._origin, files, sql, variables, single_transaction, psql_args, host, from_state)
        from sqlrs.engine_client import workspace

        with _translated():
            settings = workspace.load(str(self.base_dir or Path.cwd()),
                                      str(self.workspace_root) if self.workspace_root else None)
            return {**body, **settings.request_fields(body.get("image"), self.postgres_version)}

    def _job(self, body: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        from sqlrs.engine_client import jobs

        class Forward(jobs.NoProgress):
            def __call__(self, event: dict[str, Any]) -> None:
                if on_event is not None:
                    on_event(event)

        with _translated():
            return jobs.prepare(self.engine, body, Forward)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", "/v1/status")
        return data

