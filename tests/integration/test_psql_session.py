"""A build's psql steps run in one psql (services/states/steps/psql_session.py) on the native
runtime, yet each step sees what a `psql -f FILE` of its own would: a new server session (no SET,
role, temporary table, prepared statement or open transaction of an earlier step; the database's
settings as a new connection reads them), psql's variables as
the command line sets them, errors with the user's `file:line`. Real PostgreSQL, native runtime."""

from __future__ import annotations

from pathlib import Path

from harness import Sqlrs, psql, write

STEPS = {
    "01-setup.sql": "CREATE TABLE seen (step int, search_path text, temp_tables int, note text);\n"
                    "SET search_path = nowhere, public;\n"
                    "CREATE TEMP TABLE scratch (i int);\n"
                    "PREPARE twice AS SELECT 1;\n"
                    "CREATE ROLE sqlrs_probe;\n"
                    "SET ROLE sqlrs_probe;\n",
    # a fresh session: the default search_path, no temporary table, the session's own role (the
    # probe role could not insert into seen); PREPARE of the same name works
    "02-looks.sql": "INSERT INTO public.seen SELECT 2, current_setting('search_path'),\n"
                    "  (SELECT count(*) FROM pg_class WHERE relpersistence = 't'), 'fresh';\n"
                    "PREPARE twice AS SELECT 2;\n"
                    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '3MB');\n"
                    "END $$;\n"
                    "BEGIN;\n"
                    "INSERT INTO seen VALUES (99, '', 0, 'left uncommitted');\n",
    # ... and what a new session of this database starts with, as its own psql would see it
    "03-looks.sql": "INSERT INTO seen SELECT 3, current_setting('search_path'),\n"
                    "  (SELECT count(*) FROM pg_class WHERE relpersistence = 't'), current_setting('work_mem');\n",
    # a meta-command that changes psql itself: this step runs as a psql of its own
    "04-sets.sql": "\\set answer 42\n"
                   "INSERT INTO seen VALUES (:answer, '', 0, 'psql variable');\n",
    # ... and the variable it set is not seen by the next step (as with one psql per step)
    "05-looks.sql": "INSERT INTO seen VALUES (5, '', 0, :{?answer}::text);\n"
                    "INSERT INTO seen VALUES (6, '', 0, :'ON_ERROR_STOP');\n",
}


def args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("-f", name)]


def test_each_step_runs_in_a_session_of_its_own(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    for name, text in STEPS.items():
        write(workspace / name, text)
    dsn = sq.prepare(*args(list(STEPS)), cwd=workspace)
    rows = psql(dsn, "SELECT string_agg(concat_ws('|', step, search_path, temp_tables, note), ';' ORDER BY step) "
                     "FROM seen")
    assert rows == ('2|"$user", public|0|fresh;3|"$user", public|0|3MB;'
                    "5||0|false;6||0|1;42||0|psql variable")


def test_a_failing_step_is_reported_at_its_file_and_line_and_what_came_before_is_kept(
        sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "01-table.sql", "CREATE TABLE t (i int);\n")
    write(workspace / "02-rows.sql", "INSERT INTO t VALUES (1);\n")
    write(workspace / "03-fails.sql", "INSERT INTO t VALUES (2);\nSELECT 1/0;\n")
    names = ["01-table.sql", "02-rows.sql", "03-fails.sql"]
    failed = sq.run("prepare:psql", *sq.runtime_flags(), "--", *args(names), cwd=workspace)
    assert failed.returncode == 1
    assert "03-fails.sql:2" in failed.stderr and "division by zero" in failed.stderr, failed.stderr
    plan = sq.plan(*args(names[:2]), cwd=workspace)
    assert [row["cached"] for row in plan] == [True, True, True]  # the steps before the failing one
    fixed = workspace / "03-fails.sql"
    write(fixed, "INSERT INTO t VALUES (2);\n")
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert psql(dsn, "SELECT string_agg(i::text, ',' ORDER BY i) FROM t") == "1,2"


def test_a_step_sent_ahead_that_fails_is_reported_as_itself(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """A step the build's psql is given before the one before it is recorded (not the last two:
    those are kept) fails as its own step: its file and line, the output of its neighbours not
    mixed in, nothing after it run."""
    sq = sqlrs_native
    names = [f"0{i}-step.sql" for i in range(1, 7)]
    for i, name in enumerate(names, 1):
        write(workspace / name, f"CREATE TABLE t{i} (i int);\nINSERT INTO t{i} VALUES ({i});\n")
    # it fails at once: psql has often exited on it before the build reads its answer, and the
    # step must then not be given to a new psql (t3 would exist: "already exists" at line 1)
    write(workspace / names[2], "CREATE TABLE t3 (i int);\nSELECT 1/0;\n")
    failed = sq.run("prepare:psql", *sq.runtime_flags(), "--", *args(names), cwd=workspace)
    assert failed.returncode == 1
    assert "step 3 (" in failed.stderr and "03-step.sql:2" in failed.stderr, failed.stderr
    assert "division by zero" in failed.stderr
    write(workspace / names[2], "CREATE TABLE t3 (i int);\nINSERT INTO t3 VALUES (3);\n")
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert psql(dsn, "SELECT string_agg(i::text, ',') FROM (SELECT i FROM t1 UNION ALL SELECT i FROM t2 UNION ALL "
                     "SELECT i FROM t3 UNION ALL SELECT i FROM t6) AS x") == "1,2,3,6"
