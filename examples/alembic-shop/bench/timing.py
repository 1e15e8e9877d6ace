"""How long each test waited for its database: the setup phase of each test (its fixtures), one
JSON line per test appended to $SHOP_TIMINGS (for compare.py; loaded with `-p timing`)."""

from __future__ import annotations

import json
import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    target = os.environ.get("SHOP_TIMINGS")
    if target and report.when == "setup" and report.passed:
        line = json.dumps({"test": report.nodeid, "wait_seconds": report.duration}) + "\n"
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
