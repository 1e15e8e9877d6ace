"""Database instances: databases of their own in a state's shared server (template copies), on
every runtime. They are instances like the others (ls, rm, TTL), and nothing stays behind."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from harness import Sqlrs, short_tmp

import sqlrs


def client_for(sq: Sqlrs, workspace: Path) -> sqlrs.Client:
    return sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=workspace)


def datnames(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_database_instances_share_a_server_and_are_isolated(sqlrs_runtime: Sqlrs) -> None:
    workspace = short_tmp("ws")
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int PRIMARY KEY);\nINSERT INTO item VALUES (1);\n")
    client = client_for(sqlrs_runtime, workspace)
    state = client.build("schema.sql")
    first = client.create_instance(state, kind="database", name="db-one")
    second = client.create_instance(state, kind="database", ttl=3600)
    assert first.kind == second.kind == "database"
    assert first.port == second.port and first.dbname != second.dbname
    with psycopg.connect(first.dsn) as conn:
        conn.execute("INSERT INTO item VALUES (2)")
    with psycopg.connect(second.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM item").fetchone() == (1,)  # the other's write is not here
    assert client.get_instance("db-one").id == first.id
    listed = {i["id"]: i for i in sqlrs_runtime.instances()}
    assert set(listed) == {first.id, second.id}  # the shared server itself is not a user instance
    assert listed[first.id]["kind"] == "database" and listed[first.id]["status"] == "running"
    ran = sqlrs_runtime.run("run:psql", "--instance", "db-one", "--", "-Atc", "SELECT count(*) FROM item")
    assert ran.returncode == 0 and ran.stdout.strip() == "2", ran.stderr
    shared = client.status()["shared_servers"]
    assert [(s["state_id"], s["databases"]) for s in shared] == [(state.id, 2)]

    assert client.remove(first)
    assert first.dbname not in datnames(second.dsn)
    states = {s["id"]: s for s in sqlrs_runtime.states()}
    assert states[state.id]["instances"] == 1
    removed = sqlrs_runtime.run("rm", state.id, "--recurse", "-o", "json")
    assert removed.returncode == 0, removed.stderr
    assert {item["id"] for item in json.loads(removed.stdout)["removed"]} >= {second.id, state.id}
    assert client.status()["shared_servers"] == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(second.dsn, connect_timeout=5)


def test_a_state_with_other_databases_is_refused_for_database_instances(sqlrs_runtime: Sqlrs) -> None:
    workspace = short_tmp("ws")
    client = client_for(sqlrs_runtime, workspace)
    state = client.build(sql=["CREATE DATABASE other"])
    with pytest.raises(sqlrs.UsageError) as caught:
        client.create_instance(state, kind="database")
    assert "holds databases besides postgres (other)" in str(caught.value)
    assert "server instance" in str(caught.value)
    assert client.status()["shared_servers"] == []
    with client.instance(state=state) as server:  # a server instance of it is fine
        assert "other" in datnames(server.dsn)
    assert sqlrs_runtime.run("rm", state.id, "--recurse").returncode == 0


def test_an_engine_stop_stops_idle_shared_servers_and_keeps_busy_ones(sqlrs_runtime: Sqlrs) -> None:
    workspace = short_tmp("ws")
    (workspace / "t.sql").write_text("CREATE TABLE t (id int);\n")
    client = client_for(sqlrs_runtime, workspace)
    state = client.build("t.sql")
    kept = client.create_instance(state, kind="database")
    assert sqlrs_runtime.run("engine", "stop").returncode == 0
    with psycopg.connect(kept.dsn) as conn:  # instances outlive the engine; so does their server
        conn.execute("INSERT INTO t VALUES (1)")
    client = client_for(sqlrs_runtime, workspace)  # a new engine re-adopts it
    assert [s["databases"] for s in client.status()["shared_servers"]] == [1]
    assert client.remove(kept)
    assert sqlrs_runtime.run("engine", "stop").returncode == 0  # no database left: its server goes
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(kept.dsn, connect_timeout=5)
    client = client_for(sqlrs_runtime, workspace)
    assert client.status()["shared_servers"] == []
    assert sqlrs_runtime.run("rm", state.id, "--recurse").returncode == 0


def test_the_cli_hands_out_database_instances(sqlrs_native: Sqlrs) -> None:
    dsn = sqlrs_native.run("prepare:psql", "--kind", "database", "--name", "shop", "--", "-c",
                           "CREATE TABLE t AS SELECT 7 AS x")
    assert dsn.returncode == 0, dsn.stderr
    assert "/sqlrs_" in dsn.stdout.strip() and dsn.stdout.count("\n") == 1
    with psycopg.connect(dsn.stdout.strip()) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (7,)
    composite = sqlrs_native.run("prepare:psql", "--kind", "database", "--", "-c", "CREATE TABLE t AS SELECT 7 AS x",
                                 "run:psql", "--", "-Atc", "SELECT current_database() LIKE 'sqlrs_%', x FROM t")
    assert composite.returncode == 0, composite.stderr
    assert composite.stdout.strip() == "t|7"
    assert [i["name"] for i in sqlrs_native.instances()] == ["shop"]  # the composite's instance is gone
    bad = sqlrs_native.run("prepare:psql", "--kind", "cluster", "--", "-c", "select 1")
    assert bad.returncode == 2 and "Invalid value for '--kind'" in bad.stderr


KIND_TESTS = '''
def test_kind(sqlrs_dsn):
    import os
    import psycopg
    with psycopg.connect(sqlrs_dsn) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute("INSERT INTO item VALUES (2)")
        assert conn.execute("SELECT count(*) FROM item").fetchone() == (2,)  # a fresh copy each time
    print("KIND", "database" if name.startswith("sqlrs_") else "server")
    assert name.startswith("sqlrs_") == (os.environ["EXPECT"] == "database")
'''


@pytest.mark.parametrize(("setting", "expected"), [("auto", "database"), ("server", "server")])
def test_the_plugin_takes_database_instances_on_the_copy_store(sqlrs_native: Sqlrs, setting: str,
                                                               expected: str) -> None:
    import os
    import subprocess
    import sys

    workspace = short_tmp("ws")
    (workspace / "schema.sql").write_text("CREATE TABLE item (id int);\nINSERT INTO item VALUES (1);\n")
    (workspace / "test_kind.py").write_text(KIND_TESTS + KIND_TESTS.replace("test_kind", "test_kind_again"))
    (workspace / "pytest.ini").write_text(f"[pytest]\nsqlrs_files = schema.sql\nsqlrs_runtime = native\n"
                                          f"sqlrs_instance_kind = {setting}\n")
    env = {**os.environ, "SQLRS_STATE_DIR": str(sqlrs_native.state_dir), "EXPECT": expected}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2"],
                            cwd=workspace, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert sqlrs_native.instances() == []  # every test's instance is gone


def test_a_database_instance_is_snapshotted_as_its_own_database(sqlrs_native: Sqlrs) -> None:
    """A snapshot of a database instance is its database alone (as the new state's `postgres`),
    not the shared server's copy of the state, nor the other instances' databases."""
    workspace = short_tmp("ws")
    client = client_for(sqlrs_native, workspace)
    state = client.build(sql=["CREATE TABLE item (name text)"])
    other = client.create_instance(state, kind="database")
    mine = client.create_instance(state, kind="database")
    with psycopg.connect(other.dsn) as conn:
        conn.execute("INSERT INTO item VALUES ('other')")
    with psycopg.connect(mine.dsn) as conn:
        conn.execute("INSERT INTO item VALUES ('mine')")
    saved = mine.snapshot(name="mine")
    with client.instance(state=saved, kind="server") as copy, psycopg.connect(copy.dsn) as conn:
        assert conn.execute("SELECT name FROM item").fetchall() == [("mine",)]
        assert datnames(copy.dsn) == {"postgres", "template0", "template1"}
    with psycopg.connect(mine.dsn) as conn:  # the instance itself goes on as it was
        assert conn.execute("SELECT name FROM item").fetchall() == [("mine",)]
    other.remove()
    mine.remove()
