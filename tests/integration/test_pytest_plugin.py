"""The pytest plugin in real pytest runs: cleanup after a killed run, one short error per broken state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from harness import Sqlrs, wait_until

import sqlrs


def project(workspace: Path, tests: str, ini: str) -> None:
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int);\nINSERT INTO item VALUES (1);\n")
    (workspace / "tests").mkdir()
    (workspace / "tests" / "test_db.py").write_text(textwrap.dedent(tests))
    # server instances, as the pools these tests hold are made of (auto would take database
    # instances on the copy store)
    (workspace / "pytest.ini").write_text("[pytest]\nsqlrs_files = schema.sql\nsqlrs_runtime = native\n"
                                          "sqlrs_instance_kind = server\n" + textwrap.dedent(ini))


def start_pytest(sqlrs_native: Sqlrs, workspace: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SQLRS_STATE_DIR": str(sqlrs_native.state_dir)}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "tests"],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: killed as a whole below


BLOCKING_TESTS = '''
import os
import time

import pytest

@pytest.mark.parametrize("n", range(8))
def test_blocks(sqlrs_instance, n):
    marker = os.path.join(os.environ["MARKERS"], f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{n}")
    open(marker, "w").close()
    time.sleep(600)  # killed long before
'''


def test_a_killed_xdist_run_leaves_nothing_behind(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """SIGKILL (controller and workers) mid-run: its instances and pool go within seconds, not after
    their TTL (600 s here); an instance made with the CLI is nobody's and stays."""
    project(workspace, BLOCKING_TESTS, "sqlrs_pool_size = 2\nsqlrs_ttl = 600\n")
    cli_dsn = sqlrs_native.prepare("-f", "schema.sql", cwd=workspace)
    markers = workspace / "markers"
    markers.mkdir()
    os.environ["MARKERS"] = str(markers)
    try:
        run = start_pytest(sqlrs_native, workspace, "-n", "2")
    finally:
        del os.environ["MARKERS"]
    client = sqlrs.Client(sqlrs_native.state_dir, spawn=False)
    try:
        # both workers are inside a test, each holding an instance and the pool
        assert wait_until(lambda: {p.name.split("-")[0] for p in markers.iterdir()} == {"gw0", "gw1"},
                          timeout=300), "the workers did not start their tests"
        assert len([i for i in client.instances() if not i.pooled]) == 3
        assert [p["holders"] for p in client.pools()] == [2]
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=60)

    def only_the_cli_instance_left() -> bool:
        return [i.dsn for i in client.instances()] == [cli_dsn] and client.pools() == []

    assert wait_until(only_the_cli_instance_left), (client.instances(), client.pools())


PREFILL_TESTS = '''
def test_one(sqlrs_instance):
    pass
'''


def test_ctrl_c_during_the_pool_fill_releases_the_pool(sqlrs_native: Sqlrs, workspace: Path) -> None:
    project(workspace, PREFILL_TESTS, "sqlrs_pool_size = 4\nsqlrs_pool_prefill = true\n")
    run = start_pytest(sqlrs_native, workspace)
    client = sqlrs.Client(sqlrs_native.state_dir, spawn=False)
    try:
        def filling() -> bool:
            try:
                return any(p["ready"] < 4 for p in client.pools())
            except sqlrs.Error:
                return False  # the engine is not up yet

        assert wait_until(filling, timeout=300), "the pool did not start filling"
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl+C: the whole foreground process group gets it
        output, _ = run.communicate(timeout=120)
    assert "KeyboardInterrupt" in output or "Interrupted" in output, output
    assert wait_until(lambda: client.pools() == [] and client.instances() == []), (client.pools(),
                                                                                   client.instances())


BROKEN_TESTS = '''
import pytest

pytestmark = pytest.mark.sqlrs(files=["broken.sql"])

@pytest.mark.parametrize("n", range(6))
def test_needs_the_broken_state(sqlrs_instance, n):
    pass

def test_the_state_alone(sqlrs_state):
    pass
'''


def test_a_broken_state_fails_once_with_psqls_error(sqlrs_native: Sqlrs, workspace: Path) -> None:
    project(workspace, BROKEN_TESTS, "")
    # the error is in the statement's third line; psql reports the line the statement ends on (6)
    # and prints the statement's `LINE 3:` with a caret under the column
    (workspace / "tests" / "broken.sql").write_text(
        "CREATE TABLE a (x int);\n\nSELECT 1,\n  2,\n  nosuchcol\nFROM a;\nSELECT 3;\n")
    run = start_pytest(sqlrs_native, workspace)
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 1, output
    assert "7 errors" in output, output
    # pytest repeats each error in its short summary, untruncated when CI is set: count the
    # ERRORS section only
    errors = output.split("short test summary info")[0]
    assert errors.count('failed at broken.sql:6: ERROR:  column "nosuchcol" does not exist') == 7, output
    assert errors.count("LINE 3:   nosuchcol") == 7, output
    assert errors.count("          ^") >= 7, output
    assert "pytest_plugin.py" not in output and "Traceback" not in output, output  # no plugin traceback
    assert len(output.splitlines()) < 120, output
    jobs = sqlrs.Client(sqlrs_native.state_dir, spawn=False).call("GET", "/v1/prepare-jobs")
    assert len([job for job in jobs if job["status"] == "failed"]) == 1, jobs  # built once, not per test


LIBRARY_USER = '''
import os, sys
import sqlrs

client = sqlrs.Client(sys.argv[1], runtime="native", base_dir=sys.argv[2])
state = client.build("schema.sql")
left = client.create_instance(state)                # owned by this process
kept = client.create_instance(state)
kept.keep()                                        # disowned: outlives this process
nobodys = client.create_instance(state, owned=False)
print(left.id, kept.id, nobodys.id, flush=True)
os._exit(0)                                        # no cleanup at all
'''


def test_a_library_users_instances_go_with_it_unless_kept(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int);\n")
    (workspace / "user.py").write_text(LIBRARY_USER)
    result = subprocess.run([sys.executable, "user.py", str(sqlrs_native.state_dir), str(workspace)], cwd=workspace,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    left, kept, nobodys = result.stdout.split()
    client = sqlrs.Client(sqlrs_native.state_dir, spawn=False)
    assert wait_until(lambda: left not in {i.id for i in client.instances()}), "the owned instance stayed"
    assert {i.id for i in client.instances()} == {kept, nobodys}
    assert client.get_instance(kept).ttl_seconds == 0
