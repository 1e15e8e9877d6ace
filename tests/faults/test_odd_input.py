"""Odd input through the CLI (issue 26): file names that are not UTF-8 (26.3) and library `sql=`
steps far beyond the kernel's per-argument limit (26.4), on real PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

from harness import Sqlrs, psql

# what Linux allows in a file name and UTF-8 does not hold: the CLI sees it surrogate-escaped
ODD = os.fsdecode(b"f\xffname.sql")
ODD_DIR = os.fsdecode(b"d\xfe")


def test_file_names_that_are_not_utf8_are_built_listed_and_reported(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    (workspace / ODD).write_text("CREATE TABLE odd (i int); INSERT INTO odd VALUES (7);\n")
    (workspace / ODD_DIR).mkdir()
    (workspace / ODD_DIR / "inc.sql").write_text("INSERT INTO odd VALUES (8);\n")
    (workspace / "main.sql").write_bytes(b"\\i d\xfe/inc.sql\n")  # an include names it in its bytes
    result = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-f", ODD, "-f", "main.sql", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert psql(result.stdout.strip(), "SELECT sum(i) FROM odd") == "15"
    assert "f\\xffname.sql" in result.stderr  # the progress names the step as `ls -b` would
    sources = [row["source"] for row in sq.plan("-f", ODD, "-f", "main.sql", cwd=workspace)]
    assert sources == ["initdb", "f\\xffname.sql", "main.sql"]
    listed = sq.run("ls", "--states")  # a table on stdout: every byte printable
    assert listed.returncode == 0 and "f\\xffname.sql" in listed.stdout, listed.stderr
    # psql's messages name the file the same way, in a build and in run:psql
    (workspace / ODD).write_text("SELECT * FROM nowhere;\n")
    failed = sq.run("prepare:psql", *sq.runtime_flags(), "--", "-f", ODD, cwd=workspace)
    assert failed.returncode == 1 and "internal" not in failed.stderr, failed.stderr
    assert 'f\\xffname.sql:1: ERROR:  relation "nowhere" does not exist' in failed.stderr, failed.stderr
    instance = sq.instances()[0]["id"]
    ran = sq.run("run:psql", "--instance", instance, "--", "-v", "ON_ERROR_STOP=1", "-f", ODD, cwd=workspace)
    assert ran.returncode == 3 and "f\\xffname.sql:1: ERROR:" in ran.stderr, ran.stderr


def test_library_sql_steps_beyond_one_argument_are_built_as_psql_c_would(sqlrs_native: Sqlrs,
                                                                          workspace: Path) -> None:
    """Issue 26.4: a `sql=` step over the kernel's 128 KiB per-argument limit (140 KB, 3 MB) builds,
    and sends its text the way `-c` does: one query string, psql variables and backslashes left
    alone, and a failure reported as for a short `-c` step."""
    import sqlrs

    client = sqlrs.Client(sqlrs_native.state_dir, runtime="native", base_dir=workspace)
    for size in (140_000, 3_000_000):
        sql = (f"CREATE TABLE big AS SELECT length('{'y' * size}') AS n, ':foo \\x $x$' AS kept; "
               "INSERT INTO big SELECT n + 1, kept FROM big")
        with client.instance(state=client.build(sql=[sql], variables={"foo": "interpolated"})) as db, \
                db.connect() as conn:
            assert conn.execute("SELECT n, kept FROM big ORDER BY n").fetchall() == [
                (size, ":foo \\x $x$"), (size + 1, ":foo \\x $x$")]
    short = long = None
    for padding in (0, 140_000):
        try:
            client.build(sql=["SELECT nosuch" + " " * padding])
        except sqlrs.OperationFailed as exc:
            short, long = (str(exc), long) if padding == 0 else (short, str(exc))
    reason = "step 1 (-c) failed: ERROR:  column \"nosuch\" does not exist"
    # the error in full, as psql prints it; for the padded query psql cuts the LINE text with "..."
    assert short == f"{reason}\nLINE 1: SELECT nosuch\n               ^", short
    assert long is not None and long.splitlines()[0] == reason and long.splitlines()[1].startswith(
        "LINE 1: SELECT nosuch ") and long.splitlines()[1].endswith("..."), long
