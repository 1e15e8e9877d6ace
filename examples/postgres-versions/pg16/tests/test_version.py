"""The server this suite's tests get: its version, printed (pytest -s) and checked."""

import os

import psycopg


def test_version(sqlrs_dsn: str) -> None:
    with psycopg.connect(sqlrs_dsn) as conn:
        version = conn.execute("select version()").fetchone()[0]
        major = conn.info.server_version // 10000
    print(f"\n{os.path.basename(os.path.dirname(os.path.dirname(__file__)))}: {version}")
    expected = os.environ.get("EXPECT_MAJOR")
    if expected:
        assert major == int(expected), version
