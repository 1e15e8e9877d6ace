"""The CLI's engine client: sqlrs.engine_client.connection (kept here for scripts and benchmarks
that import it from the CLI)."""

from __future__ import annotations

from sqlrs.engine_client.connection import (
    ENGINE_STOP_TIMEOUT,
    EngineClient,
    Response,
    connect,
    live_engine,
    pid_alive,
    raise_engine_error,
    read_engine_json,
    recorded_engine,
    shutdown_engine,
    spawn_engine,
    usable_state_dir,
)

__all__ = ["ENGINE_STOP_TIMEOUT", "EngineClient", "Response", "connect", "live_engine", "pid_alive",
           "raise_engine_error", "read_engine_json", "recorded_engine", "shutdown_engine", "spawn_engine",
           "usable_state_dir"]
