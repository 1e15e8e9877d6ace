"""The server a suite's tests get: its version, printed (pytest -s) and checked against
EXPECT_MAJOR when set. Both suites (pg16/, system/) run this file (their testpaths)."""

import os

import psycopg
import pytest


def test_version(sqlrs_dsn: str, request: pytest.FixtureRequest) -> None:
    with psycopg.connect(sqlrs_dsn) as conn:
        version = conn.execute("select version()").fetchone()[0]
        major = conn.info.server_version // 10000
    suite = request.config.inipath.parent.name if request.config.inipath else "?"
    print(f"\n{suite}: {version}")
    expected = os.environ.get("EXPECT_MAJOR")
    if expected:
        assert major == int(expected), version
