from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlrs.domain.errors import UsageError
from sqlrs.domain.scripts import normalized_content, parse_include, script_lines
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


def _line_by_line(files: list[tuple[str, list[tuple[int, int]]]], index: int = 0) -> list[str]:
    """The definition normalized_content implements faster: every line, includes expanded."""
    content, includes = files[index]
    targets = dict(includes)
    lines: list[str] = []
    for number, line in enumerate(script_lines(content)):
        lines += _line_by_line(files, targets[number]) if number in targets else [line]
    return lines


_text = st.text(alphabet="ab;\n\r\t é", max_size=40)


@given(leaves=st.lists(_text, min_size=1, max_size=3), main=st.lists(_text, max_size=4),
       picks=st.lists(st.integers(min_value=0, max_value=2), max_size=4), trailing=st.booleans())
def test_normalized_content_is_the_lines_with_includes_expanded(
        leaves: list[str], main: list[str], picks: list[int], trailing: bool) -> None:
    # main: its own lines with include lines between them; leaves: files without includes
    lines, includes = [], []
    for number, text in enumerate(main):
        lines.append(text.replace("\n", " "))
        if number < len(picks):
            includes.append((len(lines), 1 + picks[number] % len(leaves)))
            lines.append("\\i leaf.sql")
    content = "\n".join(lines) + ("\n" if trailing and lines else "")
    files = [(content, includes), *((leaf, []) for leaf in leaves)]
    assert normalized_content(files) == "\n".join(_line_by_line(files))
    for leaf in leaves:
        assert normalized_content([(leaf, [])]) == "\n".join(script_lines(leaf))


def test_file_names_that_are_not_utf8_become_printable_labels_and_keep_the_key() -> None:
    """Issue 26.3: a file name's non-UTF-8 bytes arrive surrogate-escaped (os.fsdecode); the
    engine keeps them as \\xNN escapes in the labels (metadata, listings, messages), while the
    content, hence the key, is untouched."""
    import json

    from sqlrs.services.requests import parse_prepare, parse_run

    odd = os.fsdecode(b"dir\xff/f\xfename.sql")
    body = {"steps": [{"kind": "file", "source": odd, "files": [
        {"path": odd, "content": "\\i inc.sql\n", "includes": [{"line": 0, "file": 1}]},
        {"path": os.fsdecode(b"dir\xff/inc.sql"), "content": "select '\xe9';\n"}]}]}
    wire = json.loads(json.dumps(body))  # as the engine receives it: lone surrogates survive JSON
    step = parse_prepare(wire).steps[0]
    assert step.source == "dir\\xff/f\\xfename.sql" and step.source.encode("utf-8")
    assert [f.path for f in step.files] == ["dir\\xff/f\\xfename.sql", "dir\\xff/inc.sql"]
    plain = parse_prepare({"steps": [{"kind": "file", "source": "a.sql", "files": [
        {"path": "a.sql", "content": "\\i b.sql\n", "includes": [{"line": 0, "file": 1}]},
        {"path": "b.sql", "content": "select '\xe9';\n"}]}]}).steps[0]
    assert step.content_digest() == plain.content_digest()
    assert parse_run({"instance": "x", "tool": "psql", "files": wire["steps"]}).files[0].source == step.source
    assert Step("command", "-c", sql="select 1").with_printable_labels().source == "-c"
