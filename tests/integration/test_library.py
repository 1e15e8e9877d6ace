"""sqlrs as a Python library and as a pytest plugin, against a real engine (native runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import Sqlrs

import sqlrs


def client_for(harness: Sqlrs, workspace: Path) -> sqlrs.Client:
    return sqlrs.Client(harness.state_dir, runtime="native", base_dir=workspace)


def test_import_sqlrs_stays_light() -> None:
    code = ("import sys, sqlrs; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('sqlrs.entrypoints.library.client', 'psycopg', 'starlette', 'sqlalchemy', 'click', 'docker')] + "
            "[m for m in sys.modules if m.startswith('sqlrs.')]; print(heavy); assert not heavy; "
            "assert sqlrs.Client.__module__ == 'sqlrs.entrypoints.library.client'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_instance_context_manager(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int PRIMARY KEY, name text);\n\\ir seed.sql\n")
    (workspace / "seed.sql").write_text("INSERT INTO item VALUES (1, :'first');\n")
    client = client_for(sqlrs_native, workspace)
    with client.instance(files=["schema.sql"], sql="INSERT INTO item VALUES (2, 'two')",
                         variables={"first": "one"}) as db:
        assert db.dsn.startswith("postgresql://sqlrs:") and db.port > 0 and db.ttl_seconds == 0
        with db.connect() as conn:
            assert conn.execute("SELECT string_agg(name, ',' ORDER BY id) FROM item").fetchone() == ("one,two",)
        result = db.psql("-At", "-c", "SELECT count(*) FROM item").check()
        assert result.stdout.strip() == "2"
        assert db.psql("-c", "SELECT nonsense").exit_code != 0
        assert db.psql("-At", input="SELECT 40 + 2;\n").stdout.strip() == "42"
        assert db.pgbench("-i", "-s", "1", "-q").check().exit_code == 0
        instance_id = db.id
    with pytest.raises(sqlrs.NotFoundError):
        client.get_instance(instance_id)
    # the same chain again: cached
    plan = client.plan(files=["schema.sql"], sql="INSERT INTO item VALUES (2, 'two')", variables={"first": "one"})
    assert [step["cached"] for step in plan] == [True, True, True]


def test_cleanup_when_the_block_fails(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    client = client_for(sqlrs_native, workspace)
    state = client.build("a.sql")
    assert client.build(["a.sql"]).id == state.id
    with pytest.raises(RuntimeError), client.instance(state=state, ttl=120) as db:
        assert db.ttl_seconds == 120
        raise RuntimeError("boom")
    assert client.instances() == []


def test_prepare_keep_and_errors(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    (workspace / "bad.sql").write_text("CREATE TABLE b (x int);\nSELECT * FROM missing;\n")
    client = client_for(sqlrs_native, workspace)
    db = client.prepare("a.sql", name="lib", ttl=300)
    assert db.name == "lib" and db.ttl_seconds == 300
    assert client.get_instance("lib").id == db.id
    assert db.keep().ttl_seconds == 0
    assert db.remove() is True and db.remove() is False
    with pytest.raises(sqlrs.UsageError):
        client.build("nope.sql")
    with pytest.raises(sqlrs.UsageError):
        client.build(psql_args=["-h", "elsewhere", "-f", "a.sql"])
    (workspace / "fresh.sql").write_text("CREATE TABLE c (x int);\n")
    with pytest.raises(sqlrs.OperationFailed) as failed:
        client.build(["fresh.sql", "bad.sql"])
    assert failed.value.details.get("line") == 2 and "missing" in failed.value.message
    with pytest.raises(sqlrs.NotFoundError):
        client.get_instance("doesnotexist")


def test_warm_pool(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    client = client_for(sqlrs_native, workspace)
    state = client.build("a.sql")
    pool = client.set_pool(state, 2, holder="test", wait_ready=120)
    assert pool["ready"] == 2 and pool["size"] == 2
    assert [i for i in client.instances() if i.pooled] == []  # warm instances are not listed as the user's
    spares = [i for i in client.call("GET", "/v1/instances?warm=true") if i["pooled"]]
    assert len(spares) == 2
    claimed = client.create_instance(state, pool=True, ttl=60)
    assert claimed.from_pool and not claimed.pooled and claimed.ttl_seconds == 60
    assert claimed.id in {spare["id"] for spare in spares}
    with psycopg.connect(claimed.dsn) as conn:
        conn.execute("INSERT INTO a VALUES (1)")
    deadline = time.monotonic() + 60
    while client.pools()[0]["ready"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # refilled in the background
    assert client.pools()[0]["ready"] == 2 and client.pools()[0]["hits"] == 1
    # another holder keeps the pool; the last one leaving drains it
    client.set_pool(state, 2, holder="other")
    assert client.release_pool(state, holder="test")["drained"] is False
    assert client.release_pool(state, holder="other")["drained"] is True
    assert client.pools() == []
    deadline = time.monotonic() + 60  # the engine removes the spares in the background
    while len(client.instances()) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [i.id for i in client.instances()] == [claimed.id]
    # the pool is gone, but the state is in use: its automatic warm instance stays and is claimed
    warm = client.call("GET", "/v1/status")["warm"]
    assert [s["ready"] for s in warm["states"]] == [1], warm
    auto = client.create_instance(state, kind="server")  # warm instances are servers
    assert auto.from_pool
    auto.remove()
    # with warm instances turned off an instance is started the ordinary way
    client.call("PATCH", "/v1/config", {"warm.enabled": False})
    plain = client.create_instance(state, pool=True)
    assert not plain.from_pool
    plain.remove()
    claimed.remove()
    client.call("PATCH", "/v1/config", {"warm.enabled": None})
    with pytest.raises(sqlrs.UsageError):
        client.set_pool(state, 10_000)


PLUGIN_TESTS = '''
import psycopg
import pytest

@pytest.mark.parametrize("n", range(4))
def test_isolated(sqlrs_instance, n):
    with psycopg.connect(sqlrs_instance.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM item").fetchone() == (1,)
        conn.execute("INSERT INTO item VALUES (%s)", (100 + n,))

@pytest.mark.sqlrs(files=["extra.sql"])
def test_marker_state(sqlrs_dsn):
    with psycopg.connect(sqlrs_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM extra").fetchone() == (0,)

def test_module_instance(sqlrs_module_instance, sqlrs_state):
    assert sqlrs_module_instance.state_id == sqlrs_state.id

def test_fails(sqlrs_instance):
    assert False, "on purpose"
'''


def test_pytest_plugin_with_xdist(sqlrs_native: Sqlrs, workspace: Path) -> None:
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int);\nINSERT INTO item VALUES (1);\n")
    (workspace / "tests").mkdir()
    (workspace / "tests" / "extra.sql").write_text("CREATE TABLE extra (id int);\n")
    (workspace / "tests" / "test_db.py").write_text(PLUGIN_TESTS)
    (workspace / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        sqlrs_files = schema.sql
        sqlrs_runtime = native
        sqlrs_pool_size = 2
        """))
    env = {**os.environ, "SQLRS_STATE_DIR": str(sqlrs_native.state_dir)}
    report = workspace / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "--sqlrs-keep-failed",
         f"--sqlrs-report={report}", "tests"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # test_fails fails on purpose
    assert "1 failed, 6 passed" in output, output
    assert "sqlrs: 7 instance(s): " in output and "; wait for one: median" in output, output
    # the summary names what the tests got: auto takes database copies on the copy store, else servers
    backend = sqlrs.Client(sqlrs_native.state_dir).status()["snapshot"]["backend"]
    got = "database(s) of their own in the state's shared server" if backend == "copy" else "server(s) of their own"
    assert f"sqlrs: 7 instance(s): 7 {got}, " in output, output
    assert f"instance kind chosen by sqlrs_instance_kind = auto on the {backend!r} snapshot store" in output, output
    assert "from the warm pool" not in output
    assert "kept instance" in output and "of failed tests/test_db.py::test_fails" in output, output
    client = sqlrs.Client(sqlrs_native.state_dir)
    remaining = client.instances()
    # the failed test's instance is kept; the module instance was used by passing tests only
    assert [(i.ttl_seconds, i.pooled) for i in remaining] == [(0, False)], remaining
    assert remaining[0].dsn in output
    assert client.pools() == []  # both workers left: the pool is drained
    import json

    data = json.loads(report.read_text())
    assert len(data["waits"]) == 7 and {w["worker"] for w in data["waits"]} <= {"gw0", "gw1"}


def test_the_library_sends_step_digests_first(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """Like the CLI (sqlrs.engine_client.jobs): a job goes out with step digests only; the scripts
    follow only when the engine answers that it must build from them."""
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n\\ir b.sql\n")
    (workspace / "b.sql").write_text("INSERT INTO a VALUES (7);\n")
    client = client_for(sqlrs_native, workspace)
    engine = client.engine
    posted: list[tuple[dict[str, Any], int]] = []
    request = engine.request

    def recording(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = request(method, path, body, **kwargs)
        if method == "POST" and path.startswith("/v1/prepare-jobs"):
            posted.append((body, response.status))
        return response

    engine.request = recording  # type: ignore[method-assign]  # the real engine answers; this only listens
    state = client.build("a.sql", sql="SELECT 1")
    sent_scripts = [["files" in s or "sql" in s for s in body["steps"]] for body, _ in posted]
    assert sent_scripts == [[False, False], [True, True]], posted  # digests, 409, then the scripts
    assert [status for _, status in posted] == [409, 201]
    posted.clear()
    with client.instance(state=state) as db, db.connect() as conn:
        assert conn.execute("SELECT x FROM a").fetchone() == (7,)
    assert client.build("a.sql", sql="SELECT 1").id == state.id  # cached: one request, digests only
    assert [(["files" in s or "sql" in s for s in body["steps"]], status) for body, status in posted] == \
        [([False, False], 201)]


def test_instances_default_to_the_kind_the_plugin_takes(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """Issue 26.6: `kind="auto"` (the default) is a database instance on the copy store, where a
    server instance copies the whole data directory, and a server on copy-on-write stores; a
    server when a pool is asked for or the state holds other databases."""
    client = client_for(sqlrs_native, workspace)
    state = client.build(sql=["CREATE TABLE a (x int)"])
    backend = client.status()["snapshot"]["backend"]
    expected = "database" if backend == "copy" else "server"
    assert client.default_instance_kind() == expected
    with client.instance(state=state) as db, db.connect() as conn:
        assert db.kind == expected and conn.execute("SELECT count(*) FROM a").fetchone() == (0,)
    with client.instance(state=state, pool=True) as db:
        assert db.kind == "server"
    several = client.build(sql=["CREATE DATABASE other"])
    with client.instance(state=several) as db:  # a database instance copies postgres only
        assert db.kind == "server"
    with pytest.raises(sqlrs.UsageError, match="kind"):
        client.create_instance(state, kind="nope")
