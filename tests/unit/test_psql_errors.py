"""psql's error output as sqlrs reads it back (samples captured from psql 15 with ON_ERROR_STOP=1)."""

from __future__ import annotations

from pathlib import Path

from sqlrs.entrypoints.library.client_types import OperationFailed
from sqlrs.entrypoints.pytest.plugin import build_error_message
from sqlrs.services.instances.scripts import first_error

# psql -v ON_ERROR_STOP=1 -f broken.sql, where broken.sql is
#   1 SELECT 1;
#   2 SELECT 1,
#   3   2,
#   4   nosuchcol
#   5 FROM a
#   6
#   7 ;
MULTI_LINE = """ ?column? \n----------\n        1\n(1 row)\n
psql:broken.sql:7: ERROR:  column "nosuchcol" does not exist
LINE 3:   nosuchcol
          ^
HINT:  Perhaps you meant to reference the column "a.nosuchco".
"""


def test_the_line_is_psqls_and_the_statement_context_is_kept() -> None:
    error = first_error(MULTI_LINE)
    assert error is not None
    assert (error.file, error.line) == ("broken.sql", 7)  # psql names the line the statement ends on
    assert error.message.splitlines() == [
        'ERROR:  column "nosuchcol" does not exist',
        "LINE 3:   nosuchcol",
        "          ^",
        'HINT:  Perhaps you meant to reference the column "a.nosuchco".',
    ]


def test_context_stops_at_the_next_output() -> None:
    error = first_error('psql:a.sql:2: ERROR:  syntax error at or near "SELEC"\nLINE 1: SELEC 1;\n        ^\n'
                        "psql:a.sql:3: ERROR:  current transaction is aborted\n")
    assert error is not None and error.line == 2 and len(error.message.splitlines()) == 3


def failed() -> OperationFailed:
    error = first_error(MULTI_LINE)
    assert error is not None
    return OperationFailed('step 1 (broken.sql) failed at broken.sql:7: ERROR:  column "nosuchcol" does not exist',
                           details={"file": "broken.sql", "line": 7, "psql_error": error.message,
                                    "context": error.message.splitlines()[1:]})


def test_the_plugin_reports_the_one_line_error_and_psqls_context() -> None:
    assert build_error_message(failed()).splitlines() == [
        "sqlrs: cannot build the test's state: step 1 (broken.sql) failed at broken.sql:7: ERROR:  column "
        '"nosuchcol" does not exist',
        "LINE 3:   nosuchcol",
        "          ^",
        'HINT:  Perhaps you meant to reference the column "a.nosuchco".',
    ]


def test_a_command_too_long_for_one_argument_goes_in_a_script_sent_as_one_query(tmp_path: Path) -> None:
    """Issue 26.4: `-c SQL` up to ARGUMENT_MAX bytes; beyond, one dollar-quoted literal that psql
    runs with \\gexec (a tag the SQL does not contain), and psql's `file:line:` prefix removed."""
    from sqlrs.services.instances.scripts import ARGUMENT_MAX, command_args

    short = "select 1; select 2"
    assert command_args(short, tmp_path / "a", str)[0] == ["-c", short]
    assert not (tmp_path / "a").exists()
    long = "select '$sqlrs$'; -- " + "é" * (ARGUMENT_MAX // 2)
    args, humanize = command_args(long, tmp_path / "b", lambda path: f"/seen{path}")
    script = tmp_path / "b" / "command.sql"
    assert args == ["-f", f"/seen{script}"]
    text = script.read_text()
    tag = text.split("$")[1]
    assert tag.startswith("sqlrs_") and text == f"SELECT ${tag}${long}${tag}$ \\gexec\n"
    assert humanize(f"psql:/seen{script}:1: ERROR:  boom\nLINE 1: x") == "ERROR:  boom\nLINE 1: x"
