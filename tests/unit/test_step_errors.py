"""A failed step's error as psql shows it, whatever ran the step: the caret as libpq places it,
a driver's exception read by the runner's reporter, a command's output scanned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sqlrs.domain.pgerrors import ErrorReport, ServerError, error_position, from_runner, scan_output
from sqlrs.entrypoints.library.client_types import OperationFailed
from sqlrs.entrypoints.pytest.plugin import build_error_message
from sqlrs.services.states.steps.host import PYTHON_ERROR_REPORTER, ToolResult, read_failure

LONG_LEFT = "select " + "1, " * 40 + "nosuch, " + "2, " * 40 + "3"

# (query, position, what psycopg 3 printed: libpq's reportErrorPosition, captured from PostgreSQL 15)
LIBPQ = [
    ("select 1,\n  nosuchcol\nfrom a", 13, ["LINE 2:   nosuchcol", "          ^"]),
    ("select " + ", ".join(f"x{i}" for i in range(30)) + " from a", 8,
     ["LINE 1: select x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12...", "               ^"]),
    (LONG_LEFT, LONG_LEFT.index("nosuch") + 1,
     ["LINE 1: ..., 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, nosuch, 2,...",
      "                                                             ^"]),
    ("select 1,\r\n\tnosuch from a", 13, ["LINE 2:  nosuch from a", "         ^"]),
    ("select " + "1, " * 40 + "nosuch", 128,
     ["LINE 1: ...1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, nosuch",
      "                                                                 ^"]),
]


@pytest.mark.parametrize(("query", "position", "expected"), LIBPQ)
def test_the_caret_is_where_libpq_puts_it(query: str, position: int, expected: list[str]) -> None:
    assert error_position(query, position) == expected


def test_out_of_range_positions_print_nothing() -> None:
    assert error_position("select 1", 0) == [] and error_position("select 1", 50) == []


def test_server_fields_in_libpqs_order_then_the_statement() -> None:
    error = ServerError(message="function nosuch(integer) does not exist", sqlstate="42883",
                        hint="No function matches the given name and argument types.",
                        internal_query="SELECT nosuch(1)", internal_position=8,
                        context="PL/pgSQL function inline_code_block line 1 at PERFORM",
                        statement="do $$ begin perform nosuch(1); end $$")
    assert error.headline == "ERROR:  function nosuch(integer) does not exist"
    assert error.lines() == [
        "LINE 1: SELECT nosuch(1)", "               ^",
        "HINT:  No function matches the given name and argument types.",
        "QUERY:  SELECT nosuch(1)",
        "CONTEXT:  PL/pgSQL function inline_code_block line 1 at PERFORM",
        "STATEMENT:  do $$ begin perform nosuch(1); end $$",
    ]


def test_long_statements_are_cut_in_the_report() -> None:
    statement = "\n".join(f"INSERT INTO t VALUES ({i});" for i in range(100))
    lines = ServerError(message="boom", statement=statement).lines()
    assert lines[0] == "STATEMENT:  INSERT INTO t VALUES (0);" and lines[1] == "            INSERT INTO t VALUES (1);"
    assert len(lines) == 21 and lines[-1].strip() == "..."


SQLALCHEMY_TRACEBACK = '''INFO  [alembic.runtime.migration] Running upgrade 0007 -> 0008, added
Traceback (most recent call last):
  File "/p/alembic/versions/0008_x.py", line 12, in upgrade
    op.execute("SELECT nosuchcol FROM products")
sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedColumn) column "nosuchcol" does not exist
LINE 1: SELECT nosuchcol FROM products
               ^
HINT:  Perhaps you meant to reference the column "products.name".
[SQL: SELECT nosuchcol FROM products]
(Background on this error at: https://sqlalche.me/e/20/f405)'''

PSQL_SCRIPT = '''CREATE TABLE
psql:migrations/002.sql:4: ERROR:  relation "nope" does not exist
LINE 1: insert into nope values (1);
                    ^
migrate.sh: migration 002 failed'''


def test_a_commands_output_is_scanned_for_the_last_error() -> None:
    report = scan_output(SQLALCHEMY_TRACEBACK)
    assert report is not None
    assert report.headline.startswith("sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedColumn) column")
    assert report.context == ("LINE 1: SELECT nosuchcol FROM products", "               ^",
                              'HINT:  Perhaps you meant to reference the column "products.name".',
                              "[SQL: SELECT nosuchcol FROM products]")
    report = scan_output(PSQL_SCRIPT)
    assert report == ErrorReport('ERROR:  relation "nope" does not exist',
                                 ("LINE 1: insert into nope values (1);", "                    ^"))
    assert scan_output("all fine\nnothing to see\n") is None
    # a command's failure message names the database's error, not the caret line it printed last
    assert read_failure(ToolResult(1, PSQL_SCRIPT)).headline == 'ERROR:  relation "nope" does not exist'
    assert read_failure(ToolResult(3, "migration 7 exploded")) == ErrorReport("migration 7 exploded")


def run_reporter(code: str, tmp_path: Path) -> ToolResult:
    """The reporter as a runner uses it, in a Python process of its own, around `code`."""
    source = PYTHON_ERROR_REPORTER + "\nimport sys\ntry:\n" + "".join(
        f"    {line}\n" for line in code.splitlines()) + "except BaseException as exc:\n" \
        "    sqlrs_report_failure(exc, sys.argv[1])\n    sys.exit(1)\n"
    script = f"{tmp_path}/step.py"
    with open(script, "w") as handle:
        handle.write(source)
    result = subprocess.run([sys.executable, script, script], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    return ToolResult(result.returncode, result.stdout + result.stderr)


PSYCOPG_LIKE = '''
class Diag:
    severity = severity_nonlocalized = "ERROR"
    sqlstate = "42703"
    message_primary = 'column "nosuchcol" does not exist'
    message_detail = None
    message_hint = 'Perhaps you meant to reference the column "a.nosuchco".'
    statement_position = "13"
    context = internal_query = internal_position = None
class UndefinedColumn(Exception):
    diag = Diag()
class ProgrammingError(Exception):
    pass
def upgrade():
    error = ProgrammingError("(psycopg.errors.UndefinedColumn) column ...")
    error.orig = UndefinedColumn('column "nosuchcol" does not exist\\nLINE 2:   nosuchcol\\n          ^\\n'
                                 'HINT:  Perhaps you meant to reference the column "a.nosuchco".')
    error.statement = "select 1,\\n  nosuchcol\\nfrom a"
    raise error
upgrade()
'''


def test_the_reporter_reads_a_wrapped_driver_error(tmp_path: Path) -> None:
    report = read_failure(run_reporter(PSYCOPG_LIKE, tmp_path))
    assert report.headline == 'ERROR:  column "nosuchcol" does not exist'
    assert list(report.context) == ["LINE 2:   nosuchcol", "          ^",
                                    'HINT:  Perhaps you meant to reference the column "a.nosuchco".',
                                    "STATEMENT:  select 1,", "              nosuchcol", "            from a"]
    lines = (tmp_path / "step.py").read_text().splitlines()
    assert report.line is not None
    assert lines[report.line - 1].strip() == "raise error"  # in upgrade(), in the step's file


def test_the_reporter_reads_asyncpg_and_pg8000_fields(tmp_path: Path) -> None:
    asyncpg_like = ("class PostgresError(Exception):\n"
                    "    sqlstate, severity, message, detail, hint = '42P01', 'ERROR', 'relation \"t\" does not "
                    "exist', None, None\n"
                    "    position, context, internal_query, internal_position = '15', None, None, None\n"
                    "outer = RuntimeError('wrapped')\n"
                    "try:\n    raise PostgresError()\nexcept PostgresError as inner:\n"
                    "    outer.statement = 'SELECT * FROM t'\n    raise outer from inner\n")
    report = read_failure(run_reporter(asyncpg_like, tmp_path))
    assert report.headline == 'ERROR:  relation "t" does not exist'
    assert list(report.context) == ["LINE 1: SELECT * FROM t", "                      ^", "STATEMENT:  SELECT * FROM t"]
    pg8000_like = "raise Exception({'S': 'ERROR', 'C': '23505', 'M': 'duplicate key', 'D': 'Key (id)=(1) exists.'})\n"
    report = read_failure(run_reporter(pg8000_like, tmp_path))
    assert (report.headline, report.context) == ("ERROR:  duplicate key", ("DETAIL:  Key (id)=(1) exists.",))
    # not a database error: the exception's own line
    report = read_failure(run_reporter("import nosuchmodule_here\n", tmp_path))
    assert report.headline == "ModuleNotFoundError: No module named 'nosuchmodule_here'" and not report.context


def test_a_runner_report_without_a_server_error() -> None:
    assert from_runner({"error": "KeyError: 'x'", "line": "7"}) == ErrorReport("KeyError: 'x'", (), 7)


def test_the_library_and_the_plugin_show_the_lines_under_the_message() -> None:
    error = OperationFailed("step 8 (0008 v/0008_x.py) failed: revision 0008 (v/0008_x.py:12): ERROR:  boom",
                            hint="fix it", details={"context": ["LINE 1: SELEC 1", "        ^"]})
    assert str(error).splitlines() == ["step 8 (0008 v/0008_x.py) failed: revision 0008 (v/0008_x.py:12): "
                                       "ERROR:  boom", "LINE 1: SELEC 1", "        ^", "hint: fix it"]
    assert build_error_message(error).splitlines()[1:3] == ["LINE 1: SELEC 1", "        ^"]
    assert str(OperationFailed("plain", hint="h")) == "plain (hint: h)"
