"""A runtime added without forking (SPEC section 12): examples/runtime-plugin, a package of its own,
installed beside sqlrs the way a user installs it (pip, offline: no dependencies, no build
isolation), is found through its entry point by the CLI and the engine, serves prepares, and
passes sqlrs' runtime contract suite (its own tests, run from sqlrs.testing).

It is installed into a temporary directory put on PYTHONPATH, not into the venv: other tests
running at the same time see sqlrs as it ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from _require import require
from fixtures import native_available, native_harness
from harness import REPO, Sqlrs, psql, short_tmp

pytestmark = [pytest.mark.runtime("native"), pytest.mark.timeout(1200)]

EXAMPLE = REPO / "examples" / "runtime-plugin"


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The example, pip-installed into a directory of its own (what goes on PYTHONPATH)."""
    available, reason = native_available()
    require("native", available, reason)
    work = short_tmp("plugin")
    try:
        source = work / "src"  # a copy: building writes build/ and *.egg-info beside the sources
        shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        target = work / "site"
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                                 "--no-index", "--target", str(target), str(source)],
                                capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (target / "sqlrs_native_limits").is_dir()
        yield target
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def sq(installed: Path) -> Iterator[Sqlrs]:
    # the engine the CLI spawns inherits PYTHONPATH
    with native_harness("native-limits", env={"PYTHONPATH": str(installed)}) as harness:
        yield harness


def test_the_installed_runtime_is_listed_and_serves_prepares(sq: Sqlrs) -> None:
    status = sq.json("status")
    runtimes = {runtime["name"]: runtime for runtime in status["runtimes"]}
    assert list(runtimes)[:3] == ["docker", "podman", "native"]  # auto order: the built-ins first
    assert runtimes["native-limits"]["available"], runtimes["native-limits"]
    assert "servers under nice 10, io best-effort:7" in runtimes["native-limits"]["reason"]
    assert status["runtime"]["name"] != "native-limits"  # auto never prefers it to native

    assert "native-limits" in sq.run("prepare:psql", "--help").stdout  # Click's choices come from the registry
    dsn = sq.prepare("-c", "create table t as select 1 as v")  # the fast path takes the name too
    assert psql(dsn, "select v from t") == "1"
    (instance,) = sq.instances()
    assert instance["runtime"] == "native-limits"
    with psycopg.connect(dsn) as conn:  # the backend lives as long as its connection: read it meanwhile
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        limits = Path(f"/proc/{backend}/limits").read_text()
    assert int(stat[16]) == 10  # its server runs under nice 10, and so does the backend it forked
    assert "Max address space         4294967296" in limits


def test_an_unknown_runtime_is_refused_with_the_registered_names(sq: Sqlrs) -> None:
    bad = sq.run("prepare:psql", "--runtime", "native-limit", "--", "-c", "select 1")
    assert bad.returncode == 2 and "native-limits" in bad.stderr and "Traceback" not in bad.stderr


def test_its_own_tests_run_sqlrs_contract_suite_and_pass(installed: Path) -> None:
    tests = installed.parent / "src" / "tests"
    result = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(tests)],
                            capture_output=True, text=True, cwd=str(installed.parent),
                            env={**os.environ, "PYTHONPATH": str(installed), "SQLRS_REQUIRE": "native-limits"},
                            timeout=1200, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
    # the contract suite's tests are among them, on real servers
    for test in ("test_server_serves_as_promised", "test_server_survives_its_runtime_adapter",
                 "test_servers_run_under_the_limits"):
        assert f"TestNativeLimits::{test} PASSED" in result.stdout, test
