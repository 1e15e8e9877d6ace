"""prepare:exec / plan:exec: any command as a step, on every runtime (issue 15).

The command runs on the host in the CLI's cwd with the scratch server's connection in
DATABASE_URL and PG*; its key is the command line plus the content of the declared inputs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, api, processes_mentioning, psql, step_failure, wait_for, write

pytestmark = pytest.mark.timeout(900)
SQLRS_RUNTIMES = ("native", "podman")  # a command reaches a container's server over TCP as a native one (conftest.py)

EXAMPLE = REPO / "examples" / "exec-migrations"
MIGRATE = ["--input", "migrate.py", "--input", "migrations/*.sql", "--", sys.executable, "migrate.py"]


def project(workspace: Path) -> Path:
    target = workspace / "books"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def prepare(sq: Sqlrs, root: Path, *args: str) -> str:
    return sq.prepare_input("exec", *args, cwd=root)


def plan(sq: Sqlrs, root: Path, *args: str) -> list[dict]:
    # options before `--`: everything after it is the command
    return sq.plan_input("exec", *args, cwd=root)


def test_prepare_exec_runs_the_example_migrations(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    rows = plan(sq, root, *MIGRATE)
    assert [row["kind"] for row in rows] == ["base", "exec"]
    assert rows[1]["source"].endswith("migrate.py") and not rows[1]["cached"]
    dsn = prepare(sq, root, *MIGRATE)
    assert psql(dsn, "SELECT string_agg(title, '|' ORDER BY published) FROM books") == (
        "Solaris|The Left Hand of Darkness|The Dispossessed")
    assert psql(dsn, "SELECT count(*) FROM schema_migrations") == "3"
    sq.remove_dsn(dsn)
    assert plan(sq, root, *MIGRATE)[1]["cached"]
    assert {s["id"]: s["kind"] for s in sq.states()}[rows[1]["state_id"]] == "exec"
    # the same state as a database in its shared server
    database = prepare(sq, root, "--kind", "database", *MIGRATE)
    assert psql(database, "SELECT count(*) FROM books") == "3"
    assert [i["kind"] for i in sq.instances() if i["dsn"] == database] == ["database"]
    sq.remove_dsn(database)


def test_declared_inputs_key_the_state_and_undeclared_files_do_not(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    key = plan(sq, root, *MIGRATE)[1]["state_id"]
    (root / "README.md").write_text("edited: not declared\n")
    assert plan(sq, root, *MIGRATE)[1]["state_id"] == key  # the user's responsibility
    seed = root / "migrations" / "003_seed.sql"
    seed.write_text(seed.read_text() + "INSERT INTO authors (name) VALUES ('Octavia E. Butler');\n")
    edited = plan(sq, root, *MIGRATE)[1]
    assert edited["state_id"] != key and not edited["cached"]
    write(root / "migrations" / "004_more.sql", "CREATE TABLE reviews (id int);\n")  # a new file the glob matches
    added = plan(sq, root, *MIGRATE)[1]
    assert added["state_id"] not in (key, edited["state_id"])
    # the command line is part of the key; where the project lives is not
    assert plan(sq, root, "--input", "migrate.py", "--input", "migrations/*.sql", "--", sys.executable,
                "./migrate.py")[1]["state_id"] != added["state_id"]
    moved = workspace / "moved"
    shutil.copytree(root, moved)
    assert plan(sq, moved, *MIGRATE)[1]["state_id"] == added["state_id"]
    dsn = prepare(sq, moved, *MIGRATE)
    assert psql(dsn, "SELECT count(*) FROM authors") == "3"
    assert psql(dsn, "SELECT count(*) FROM reviews") == "0"
    sq.remove_dsn(dsn)


def test_the_command_gets_the_connection_in_its_environment(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    write(workspace / "record.py", """\
import os, psycopg
names = ["DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"]
assert all(os.environ.get(n) for n in names), {n: os.environ.get(n) for n in names}
assert os.environ["SHOP_SETTING"] == "kept"  # the caller's environment comes along
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as a, psycopg.connect("", autocommit=True) as b:
    a.execute("CREATE TABLE seen (cwd text, host text, usr text)")
    b.execute("INSERT INTO seen VALUES (%s, %s, current_user)", (os.getcwd(), os.environ["PGHOST"]))
""")
    env = {"PGHOST": "/nonexistent", "PGPASSWORD": "wrong", "DATABASE_URL": "postgresql://nowhere/x",
           "SHOP_SETTING": "kept"}
    result = sq.run("prepare:exec", *sq.runtime_flags(), "--input", "record.py", "--", sys.executable,
                    "record.py", cwd=workspace, env=env)
    assert result.returncode == 0, result.stderr
    dsn = result.stdout.strip()
    assert psql(dsn, "SELECT cwd, host, usr FROM seen") == f"{workspace}|127.0.0.1|sqlrs"
    sq.remove_dsn(dsn)


def test_a_failing_command_is_named_and_leaves_nothing(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    # it leaves a child behind that holds its output open: that ends with the step too
    write(workspace / "fail.sh", "psql -X -q -c 'CREATE TABLE half (id int)'\n"
                                 "echo 'migration 7 exploded' >&2\nsleep 611.5 &\nexit 3\n")
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("prepare:exec", *sq.runtime_flags(), "--input", "fail.sh", "--", "sh", "fail.sh",
                    cwd=workspace)
    assert result.returncode == 1, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("sqlrs: error:"))
    assert "(sh fail.sh) failed" in error and "exited with 3: migration 7 exploded" in error, error
    assert "Traceback" not in result.stderr
    rows = plan(sq, workspace, "--input", "fail.sh", "--", "sh", "fail.sh")
    assert rows[0]["cached"] and not rows[1]["cached"]
    assert {i["id"] for i in sq.instances()} == instances_before
    assert not list((sq.state_dir / "store" / "scratch").iterdir())
    assert not processes_mentioning("sleep 611.5")  # what the command started ended with it

    missing = sq.run("prepare:exec", *sq.runtime_flags(), "--", "no-such-tool-here", cwd=workspace)
    assert missing.returncode == 1 and "no-such-tool-here: command not found" in missing.stderr
    for args, message in ((["--"], "no command to run"), (["--input", "nothing/*.sql", "--", "true"],
                                                          "matches no file")):
        usage = sq.run("prepare:exec", *sq.runtime_flags(), *args, cwd=workspace)
        assert usage.returncode == 2 and message in usage.stderr, usage.stderr


def test_a_failing_migration_shows_what_the_database_said(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    """The command printed PostgreSQL's error (here psycopg's, through migrate.py): the CLI shows
    it as for a psql step, its headline in the one-line reason and LINE/caret/HINT under it."""
    import sqlrs

    sq = sqlrs_runtime
    root = project(workspace)
    write(root / "migrations" / "004_broken.sql", "UPDATE books\n   SET title = upper(titel);\n")
    shown = step_failure(sq.run("prepare:exec", *sq.runtime_flags(), *MIGRATE, cwd=root))
    assert shown[0].endswith("failed: the command exited with 1: migrate.py: 004_broken.sql failed: column "
                             '"titel" does not exist'), shown
    assert shown[1:4] == ["LINE 2:    SET title = upper(titel);", " " * 29 + "^",
                          'HINT:  Perhaps you meant to reference the column "books.title".'], shown
    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=root)
    with pytest.raises(sqlrs.OperationFailed) as failed:
        client.build(exec=MIGRATE[MIGRATE.index("--") + 1:], inputs=["migrate.py", "migrations/*.sql"])
    assert str(failed.value).splitlines()[1:4] == shown[1:4]


def test_composite_and_python_api(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    import sqlrs

    sq = sqlrs_runtime
    root = project(workspace)
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("-q", "prepare:exec", *sq.runtime_flags(), *MIGRATE, "run:psql", "--", "-At", "-c",
                    "SELECT count(*) FROM books", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    assert {i["id"] for i in sq.instances()} == instances_before

    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=root)
    state = client.build(exec=[sys.executable, "migrate.py"], inputs=["migrate.py", "migrations/*.sql"])
    assert state.id == plan(sq, root, *MIGRATE)[1]["state_id"]
    with client.instance(state=state) as db, db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM authors").fetchone() == (2,)


def test_cancelling_the_job_kills_the_command(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    result = sq.run("prepare:exec", *sq.runtime_flags(), "--no-watch", "--", "sh", "-c",
                    "echo started; exec sleep 612.5", cwd=workspace)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.splitlines()[0]
    wait_for(lambda: processes_mentioning("sleep 612.5"), timeout=300, what="the command to start")
    api(sq, f"/v1/prepare-jobs/{job_id}/cancel", "POST")
    wait_for(lambda: api(sq, f"/v1/prepare-jobs/{job_id}")["status"] == "cancelled", timeout=120,
             what="the job to be cancelled")
    assert not processes_mentioning("sleep 612.5")
    assert not list((sq.state_dir / "store" / "scratch").iterdir())
    events = api(sq, f"/v1/prepare-jobs/{job_id}/events?follow=0")
    assert any(event.get("data", {}).get("text") == "started" for event in events)  # output streamed as it came
