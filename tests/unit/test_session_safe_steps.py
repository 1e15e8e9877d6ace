"""Which psql steps a build may run in its one psql session (services/states/steps/psql_session.py):
only `-f` steps whose meta-commands leave psql as they found it, and never with `-1`."""

from __future__ import annotations

import pytest

from sqlrs.domain.steps import PsqlOptions, ScriptFile, Step
from sqlrs.services.states.steps.psql_session import session_safe


def file_step(*contents: str) -> Step:
    return Step("file", "m.sql",
                tuple(ScriptFile(f"f{i}.sql", text) for i, text in enumerate(contents)))


@pytest.mark.parametrize("text", [
    "CREATE TABLE t (i int);\n",
    "\\i other.sql\nSELECT 1;\n",
    "\\echo migrating\n\\copy t FROM 'rows.csv' CSV\nSELECT format('select %s', 1) \\gexec\n",
    "\\warn careful\nSELECT 1 \\g\n",
])
def test_steps_that_leave_psql_as_it_was_run_in_the_session(text: str) -> None:
    assert session_safe(file_step(text), PsqlOptions())


@pytest.mark.parametrize("text", [
    "\\set answer 42\nSELECT :answer;\n",
    "SELECT 1 AS n \\gset\n",
    "\\pset format unaligned\n",
    "\\o out.txt\nSELECT 1;\n",
    "\\c other\n",
    "\\connect other\n",
    "\\if true\nSELECT 1;\n\\endif\n",
    "SELECT E'a\\nb';\n",  # a backslash in a literal looks like a meta-command: the slower way, same result
    "\\q\n",
])
def test_steps_that_change_psql_run_as_a_psql_of_their_own(text: str) -> None:
    assert not session_safe(file_step(text), PsqlOptions())


def test_an_unsafe_included_file_makes_the_whole_step_unsafe() -> None:
    assert not session_safe(file_step("\\i inc.sql\n", "\\set x 1\n"), PsqlOptions())


def test_command_steps_and_single_transaction_run_as_a_psql_of_their_own() -> None:
    assert not session_safe(Step("command", "-c", sql="SELECT 1"), PsqlOptions())
    assert not session_safe(file_step("SELECT 1;\n"), PsqlOptions(single_transaction=True))
