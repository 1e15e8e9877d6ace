"""Fixtures shared by the end-to-end and fault suites (imported by their conftest files)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _require import require
from harness import Sqlrs, short_tmp


def native_available() -> tuple[bool, str]:
    from sqlrs.adapters.native import NativeRuntime

    probe = NativeRuntime(pg_bin=None, user="postgres", binaries_cache=Path("/tmp/sqlrs-test-pg")).probe()
    return probe.available, probe.reason


@contextlib.contextmanager
def native_harness(runtime: str = "native", env: dict[str, str] | None = None) -> Iterator[Sqlrs]:
    """A fresh state directory driven through the CLI on `runtime` (native, or one built on it),
    with `env` added; afterwards every instance is removed, the engine stopped, and nothing may be
    left running."""
    available, reason = native_available()
    require("native", available, reason)
    state_dir = short_tmp()
    harness = Sqlrs(state_dir, runtime=runtime)
    harness.env.update(env or {})
    try:
        yield harness
    finally:
        leftovers = harness.close()
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leftovers, f"left behind: {leftovers}"


@pytest.fixture
def sqlrs_native() -> Iterator[Sqlrs]:
    """A fresh state directory driven through the CLI on the native runtime (native_harness)."""
    with native_harness() as harness:
        yield harness


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A project directory (a git root) whose files prepare may read."""
    path = short_tmp("ws")
    (path / ".git").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
