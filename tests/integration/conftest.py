"""Fixtures for end-to-end tests: a fresh state directory per test, cleaned and checked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from _require import require
from fixtures import native_available, sqlrs_native, workspace
from harness import Sqlrs, short_tmp

__all__ = ["sqlrs_native", "sqlrs_runtime", "workspace"]


# -- one state directory per runtime, shared by a module's tests ---------------------------------
RUNTIME_NAMES = ("native", "docker", "podman")


def runtime_available(name: str) -> tuple[bool, str]:
    if name == "native":
        return native_available()
    from _containers import container_runtime_available

    return container_runtime_available(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`sqlrs_runtime` runs a test once per runtime: all three, or those its module names in
    `SQLRS_RUNTIMES` (where the runtime matters only through instances, native and one container
    runtime say as much as all three; test_runtimes_e2e.py and the contract suites take every one)."""
    if "sqlrs_runtime" in metafunc.fixturenames:
        names = getattr(metafunc.module, "SQLRS_RUNTIMES", RUNTIME_NAMES)
        assert set(names) <= set(RUNTIME_NAMES), names
        metafunc.parametrize("sqlrs_runtime", names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def sqlrs_runtime(request: pytest.FixtureRequest) -> Iterator[Sqlrs]:
    """A state directory driven with `--runtime <param>` (docker/podman: the local test image).

    Module-scoped: the tests of one module share its cache (and engine), so each test removes
    the instances it made. Teardown removes any instance left, stops the engine, and fails on
    what remains after that (processes, containers labelled with the state dir).
    """
    from _containers import containers, remove_containers

    name = request.param
    available, reason = runtime_available(name)
    require(name, available, reason)
    state_dir = short_tmp()
    harness = Sqlrs(state_dir, runtime=name)
    try:
        yield harness
    finally:
        leftovers = harness.close()
        stray = containers(state_dir)
        remove_containers(stray)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not leftovers, f"left behind: {leftovers}"
        assert not stray, f"containers left behind: {stray}"
