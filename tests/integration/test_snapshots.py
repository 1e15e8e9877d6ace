"""Manual snapshots (`sqlrs snapshot`) and chains started from a state (`prepare:psql --from`).

On every runtime (native, docker, podman: the module-scoped `sqlrs_runtime` fixture, failing
instead of skipping for runtimes named in SQLRS_REQUIRE) and on the btrfs and reflink stores:
an instance is modified while a client holds a connection (and an open transaction) to it, it is
snapshotted online, and new instances from the snapshot see exactly the committed modification
while the original instance keeps running with its connection. Real servers, real stores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import Sqlrs, api, processes_mentioning, psql
from test_backends_e2e import CowSqlrs, sqlrs_cow  # noqa: F401 - the fixture, for the store variants

pytestmark = pytest.mark.timeout(900)

STATE_ID = re.compile(r"^[0-9a-f]{64}$")


def instance_by_dsn(sq: Sqlrs, dsn: str) -> dict[str, Any]:
    return next(i for i in sq.instances() if i["dsn"] == dsn)


def states_by_id(sq: Sqlrs) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in sq.states()}


def prepare_from(sq: Sqlrs, state: str, *psql_args: str) -> str:
    extra = ["--", *psql_args] if psql_args else []
    result = sq.run("prepare:psql", *sq.runtime_flags(), "--from", state, *extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("postgresql://sqlrs:"), result.stdout
    return lines[0]


def snapshot_while_connected(sq: Sqlrs) -> None:
    """The scenario of the issue, on whatever runtime and store `sq` uses."""
    dsn = sq.prepare("-c", "CREATE TABLE t (id int PRIMARY KEY)")
    original = instance_by_dsn(sq, dsn)
    psql(dsn, "INSERT INTO t SELECT generate_series(1, 500)")
    held = psycopg.connect(dsn, autocommit=True)
    try:
        backend_pid = held.execute("SELECT pg_backend_pid()").fetchone()
        held.execute("INSERT INTO t VALUES (-1)")  # committed before the snapshot: in it
        held.execute("BEGIN")
        held.execute("INSERT INTO t VALUES (-2)")  # uncommitted during the snapshot: not in it

        made = sq.run("snapshot", original["id"], "--name", "first")
        assert made.returncode == 0, made.stderr
        snap = made.stdout.splitlines()[-1]
        assert STATE_ID.match(snap), made.stdout

        # the instance kept running and the client its session, transaction included
        assert held.execute("SELECT pg_backend_pid()").fetchone() == backend_pid
        held.execute("COMMIT")
        assert psql(dsn, "SELECT count(*) FROM t") == "502"

        states = states_by_id(sq)
        assert states[snap]["kind"] == "snapshot"
        assert states[snap]["parent_id"] == original["state_id"]
        assert states[snap]["base_id"] == states[original["state_id"]]["base_id"]
        assert states[snap]["runtime"] == sq.runtime
        assert states[snap]["source"] == f"snapshot of {original['id']} (first)"
        tree = sq.run("ls", "--tree")
        assert tree.returncode == 0 and snap[:12] in tree.stdout, tree.stdout

        # the cache lookup by key (full or prefix); an unknown key is 404 not_found
        assert api(sq, f"/v1/cache/{snap[:16]}")["id"] == snap
        assert api(sq, f"/v1/cache/{'0' * 64}")["code"] == "not_found"

        # an instance of the snapshot: the committed rows, not the uncommitted one
        # no --runtime/--image: the state's runtime, and the image of an instance of its base
        plain = sq.run("prepare:psql", "--from", snap[:12])
        assert plain.returncode == 0, plain.stderr
        from_snap = plain.stdout.strip()
        assert psql(from_snap, "SELECT count(*), min(id) FROM t") == "501|-1"
        assert instance_by_dsn(sq, from_snap)["state_id"] == snap
        assert psql(from_snap, "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'sqlrs'") == "f"

        # one step on it: planned on the cached snapshot, built, cached as H(snapshot, step)
        step = ("-c", "INSERT INTO t VALUES (1000)")
        plan = json.loads(sq.run("plan:psql", *sq.runtime_flags(), "--from", snap, "-o", "json", "--",
                                 *step).stdout)
        assert (plan[0]["state_id"], plan[0]["cached"], plan[0]["kind"]) == (snap, True, "state")
        assert len(plan) == 2 and plan[1]["cached"] is False and plan[1]["parent_id"] == snap
        on_top = prepare_from(sq, snap, *step)
        assert psql(on_top, "SELECT count(*), max(id) FROM t") == "502|1000"
        again = json.loads(sq.run("plan:psql", *sq.runtime_flags(), "--from", snap, "-o", "json", "--",
                                  *step).stdout)
        assert [p["cached"] for p in again] == [True, True]

        # a second snapshot of the same instance is another state (ids are unique), -o json
        second = sq.run("snapshot", original["id"], "-o", "json")
        assert second.returncode == 0, second.stderr
        second_state = json.loads(second.stdout)
        assert second_state["id"] != snap and second_state["kind"] == "snapshot"
        assert psql(prepare_from(sq, second_state["id"]), "SELECT count(*) FROM t") == "502"
        assert held.execute("SELECT count(*) FROM t").fetchone() == (502,)
    finally:
        held.close()

    # removal: the snapshot with what was built on it; the original instance is untouched
    refused = sq.run("rm", snap)
    assert refused.returncode == 1 and "dependent" in refused.stderr, refused.stderr
    removed = sq.run("rm", snap, "--recurse")
    assert removed.returncode == 0, removed.stderr
    removed_second = sq.run("rm", "--recurse", second_state["id"])
    assert removed_second.returncode == 0, removed_second.stderr
    left = states_by_id(sq)
    assert snap not in left and second_state["id"] not in left and plan[1]["state_id"] not in left
    assert [i["id"] for i in sq.instances()] == [original["id"]]
    assert psql(dsn, "SELECT count(*) FROM t") == "502"
    store = sq.state_dir / "store"
    assert not (store / "states" / snap).exists()
    for sub in ("scratch", "tmp"):
        assert list((store / sub).iterdir()) == [], sub
    assert not processes_mentioning(str(store / "scratch"))
    assert sq.run("rm", original["id"]).returncode == 0


def test_snapshot_of_a_running_instance(sqlrs_runtime: Sqlrs) -> None:
    snapshot_while_connected(sqlrs_runtime)


def test_snapshot_errors(sqlrs_runtime: Sqlrs, tmp_path: Path) -> None:
    sq = sqlrs_runtime
    missing = sq.run("snapshot", "no-such-instance")
    assert missing.returncode == 4, missing.stderr
    assert missing.stderr.splitlines()[-2].startswith("sqlrs: error: ")
    assert "Traceback" not in missing.stderr
    unknown = sq.run("prepare:psql", *sq.runtime_flags(), "--from", "f" * 12)
    assert unknown.returncode == 4 and "Traceback" not in unknown.stderr, unknown.stderr
    bad_name = sq.run("snapshot", "abc", "--name", "no/slashes")
    assert bad_name.returncode == 2, bad_name.stderr
    if not sq.states():
        sq.prepare("-c", "SELECT 1")
    other = "native" if sq.runtime != "native" else "docker"
    mismatch = sq.run("prepare:psql", "--runtime", other, "--from", sq.states()[0]["id"])
    assert mismatch.returncode == 2, mismatch.stderr
    assert f"belongs to the {sq.runtime} runtime" in mismatch.stderr and "hint: " in mismatch.stderr


def test_snapshot_on_copy_on_write_stores(sqlrs_cow: CowSqlrs) -> None:  # noqa: F811
    snapshot_while_connected(sqlrs_cow)


def test_library_snapshot_and_from_state(sqlrs_native: Sqlrs, workspace: Path) -> None:
    import sqlrs

    client = sqlrs.Client(sqlrs_native.state_dir, runtime="native", base_dir=workspace)
    with client.instance(sql="CREATE TABLE item (name text)") as db:
        db.psql("-c", "INSERT INTO item VALUES ('ada')").check()
        with db.connect() as conn:  # open during the snapshot
            saved = db.snapshot(name="with-ada")
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (1,)
        assert saved.runtime == "native"
        assert client.call("GET", f"/v1/cache/{saved.id[:10]}")["kind"] == "snapshot"
        copy = client.prepare(from_state=saved)
        assert copy.state_id == saved.id
        with copy.connect() as conn:
            assert conn.execute("SELECT name FROM item").fetchall() == [("ada",)]
        copy.remove()
        built = client.build(sql=["INSERT INTO item VALUES ('bob')"], from_state=saved.id[:12])
        plan = client.plan(sql=["INSERT INTO item VALUES ('bob')"], from_state=saved)
        assert [(row["state_id"], row["cached"]) for row in plan] == [(saved.id, True), (built.id, True)]
        with client.instance(state=built) as more, more.connect() as conn:
            assert conn.execute("SELECT count(*) FROM item").fetchone() == (2,)
    with pytest.raises(sqlrs.NotFoundError):
        client.snapshot("gone")
    with pytest.raises(sqlrs.NotFoundError):
        client.call("GET", f"/v1/cache/{'0' * 64}")
    assert client.remove_state(saved, recurse=True)
    assert not client.remove_state(saved)
    assert all(state["id"] not in (saved.id, built.id) for state in client.states())
