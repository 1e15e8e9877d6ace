"""`sqlrs rm INSTANCE` while clients are connected: refused with the clients listed,
`--force` removes anyway, `--dry-run` shows the refusal; internal removals still remove."""

from __future__ import annotations

import json

import psycopg
from harness import Sqlrs


def test_rm_refuses_while_clients_are_connected(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    dsn = sq.prepare("-c", "CREATE TABLE t (x int)", name="busy")
    instance = sq.instances()[0]
    with psycopg.connect(dsn, application_name="rm-edge-test", autocommit=True) as conn:
        backend = conn.info.backend_pid
        refused = sq.run("rm", "busy")
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.splitlines()
        assert lines[0] == f"sqlrs: error: instance {instance['id']} has 1 client(s) connected", lines
        assert lines[-1] == "hint: disconnect them, or remove it anyway with --force"
        client = lines[1]
        for part in (f"pid {backend}", "user sqlrs", "application rm-edge-test", "from 127.0.0.1", "since 20"):
            assert part in client, client
        assert "Traceback" not in refused.stderr and refused.stdout == ""
        assert [i["id"] for i in sq.instances()] == [instance["id"]]
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)  # untouched

        dry = sq.run("rm", "busy", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would refuse to remove instance {instance['id']} (busy): 1 client(s) connected" in dry.stdout
        assert f"pid {backend}" in dry.stdout
        dry_json = json.loads(sq.run("rm", "busy", "--dry-run", "-o", "json").stdout)
        assert dry_json["removed"] == [] and dry_json["refused"][0]["id"] == instance["id"]
        clients = dry_json["refused"][0]["clients"]
        assert [(c["pid"], c["user"], c["application_name"], c["client_addr"]) for c in clients] == [
            (backend, "sqlrs", "rm-edge-test", "127.0.0.1")]
        assert clients[0]["backend_start"]
        assert sq.json("rm", "busy", "--dry-run", "--force")["removed"][0]["id"] == instance["id"]
        assert len(sq.instances()) == 1

        forced = sq.run("rm", "busy", "--force")
        assert forced.returncode == 0, forced.stderr
        assert sq.instances() == []


def test_rm_without_clients_and_internal_removals(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    dsn = sq.prepare("-c", "SELECT 1")
    with psycopg.connect(dsn):
        pass
    instance = sq.instances()[0]
    removed = sq.run("rm", instance["id"])  # the client went away: removed without --force
    assert removed.returncode == 0 and f"removed instance {instance['id']}" in removed.stdout, removed.stderr

    # the Python library's remove (and so its context managers and the pytest plugin) forces
    import sqlrs

    dsn = sq.prepare("-c", "SELECT 1")
    with psycopg.connect(dsn, autocommit=True), sqlrs.Client(state_dir=sq.state_dir) as client:
        (only,) = client.instances()
        assert client.remove(only) is True
    assert sq.instances() == []
