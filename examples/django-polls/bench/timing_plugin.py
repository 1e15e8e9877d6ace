"""A pytest plugin for bench/compare.py (loaded with `-p timing_plugin`): how long each process
waited for its test database (pytest-django's `django_db_setup`, whoever provides it) and each
test's setup phase, one JSON line per measurement in $POLLS_BENCH_TIMINGS."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from typing import Any

import pytest

_controller = False  # the xdist controller sees every worker's reports again: the worker writes them


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get("POLLS_BENCH_TIMINGS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(record) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    global _controller
    _controller = config.pluginmanager.hasplugin("dsession")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        if fixturedef.argname == "django_db_setup":
            _write({"kind": "db_setup", "pid": os.getpid(), "seconds": time.perf_counter() - started})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "setup" and not _controller:
        _write({"kind": "test_setup", "test": report.nodeid, "seconds": report.duration})
