from __future__ import annotations

import pytest

from sqlrs.domain.errors import UsageError
from sqlrs.domain.scripts import parse_include
from sqlrs.domain.steps import Include, ScriptFile, Step


def test_parse_include_forms() -> None:
    assert parse_include("\\i a.sql") == ("i", "a.sql")
    assert parse_include("  \\ir  ../b.sql  ") == ("ir", "../b.sql")
    assert parse_include("\\include 'x y.sql'") == ("include", "x y.sql")
    assert parse_include("\\include_relative 'it''s.sql'") == ("include_relative", "it's.sql")
    assert parse_include("select 1; -- \\i nope") is None
    assert parse_include("\\if :x") is None
    assert parse_include("\\set x 1") is None


def test_cycles_and_bad_includes_are_refused() -> None:
    a = ScriptFile("a.sql", "\\i b.sql\n", (Include(0, 1),))
    b = ScriptFile("b.sql", "\\i a.sql\n", (Include(0, 0),))
    with pytest.raises(UsageError, match="cycle"):
        Step("file", "a.sql", (a, b)).validate()
    not_directive = ScriptFile("a.sql", "select 1;\n", (Include(0, 1),))
    with pytest.raises(UsageError, match="not an include"):
        Step("file", "a.sql", (not_directive, ScriptFile("b.sql", ""))).validate()
    dangling = ScriptFile("a.sql", "\\i b.sql\n", (Include(0, 5),))
    with pytest.raises(UsageError, match="points nowhere"):
        Step("file", "a.sql", (dangling,)).validate()
    with pytest.raises(UsageError):
        Step("command", "-c", (), None).validate()


def test_normalized_content_expands_depth_first() -> None:
    main = ScriptFile("m.sql", "one\n\\i a.sql\nfour\n", (Include(1, 1),))
    a = ScriptFile("a.sql", "two\n\\ir b.sql\n", (Include(1, 2),))
    b = ScriptFile("b.sql", "three\n")
    step = Step("file", "m.sql", (main, a, b))
    step.validate()
    assert step.normalized_content() == "one\ntwo\nthree\nfour"
    shared = Step("file", "m.sql", (ScriptFile("m.sql", "\\i b.sql\n\\i b.sql\n", (Include(0, 1), Include(1, 1))),
                                    b))
    shared.validate()  # the same file twice is not a cycle
    assert shared.normalized_content() == "three\nthree"
