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
