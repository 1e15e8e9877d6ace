"""Cache keys: content decides, spelling does not, no field can bleed into another."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sqlrs.domain import keys
from sqlrs.domain.errors import UsageError
from sqlrs.domain.steps import Include, PsqlOptions, ScriptFile, Step

lines = st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\\"), max_size=30), max_size=6)
paths = st.text(alphabet="abcdefghij/._-", min_size=1, max_size=20)


def file_step(*files: ScriptFile, source: str = "main.sql") -> Step:
    return Step(kind="file", source=source, files=tuple(files))


def with_include(before: list[str], after: list[str], target: int, spelling: str) -> ScriptFile:
    content = "".join(line + "\n" for line in [*before, spelling, *after])
    return ScriptFile(path="main.sql", content=content, includes=(Include(line=len(before), file=target),))


@given(before=lines, after=lines, body=lines, path_a=paths, path_b=paths,
       command=st.sampled_from(["\\i", "\\ir", "\\include", "\\include_relative"]))
def test_include_spelling_does_not_change_the_key(before: list[str], after: list[str], body: list[str],
                                                  path_a: str, path_b: str, command: str) -> None:
    included = "".join(line + "\n" for line in body)
    step_a = file_step(with_include(before, after, 1, f"\\i {path_a}"), ScriptFile(path_a, included))
    step_b = file_step(with_include(before, after, 1, f"{command} '{path_b}'"), ScriptFile(path_b, included),
                       source="elsewhere/other.sql")
    inlined = file_step(ScriptFile("flat.sql", "".join(line + "\n" for line in [*before, *body, *after])))
    options = PsqlOptions()
    assert keys.step_hash(step_a, options) == keys.step_hash(step_b, options) == keys.step_hash(inlined, options)


@given(content=st.text(max_size=200), other=st.text(max_size=200))
def test_any_content_change_changes_the_key(content: str, other: str) -> None:
    steps = [file_step(ScriptFile("a.sql", text)) for text in (content, other)]
    # what psql would run differs (a trailing newline or an empty file's "line" does not count)
    assume(steps[0].normalized_content() != steps[1].normalized_content())
    assert keys.step_hash(steps[0], PsqlOptions()) != keys.step_hash(steps[1], PsqlOptions())


def test_a_digest_stands_for_its_content() -> None:
    step = file_step(ScriptFile("a.sql", "select 1;\n"))
    lean = step.without_content()
    lean.validate()
    assert not lean.has_content and keys.step_hash(lean, PsqlOptions()) == keys.step_hash(step, PsqlOptions())
    liar = Step(kind="file", source="a.sql", files=step.files, digest="0" * 64)
    with pytest.raises(UsageError, match="does not match"):
        liar.validate()


@given(st.lists(st.text(max_size=8), min_size=1, max_size=5), st.lists(st.text(max_size=8), min_size=1, max_size=5))
def test_no_concatenation_collisions(left: list[str], right: list[str]) -> None:
    assume(left != right)
    assert keys.digest(*left) != keys.digest(*right)


def test_concatenation_examples() -> None:
    assert keys.digest("ab", "c") != keys.digest("a", "bc")
    assert keys.digest(["a", "b"], "c") != keys.digest(["a"], "b", "c")
    assert keys.digest("1") != keys.digest(1)
    assert keys.digest(None) != keys.digest("")


def test_options_and_kind_enter_the_key() -> None:
    step = file_step(ScriptFile("a.sql", "select 1;"))
    command = Step(kind="command", source="-c", sql="select 1;")
    plain = keys.step_hash(step, PsqlOptions())
    assert keys.step_hash(command, PsqlOptions()) != plain
    assert keys.step_hash(step, PsqlOptions.create([("x", "1")], False)) != plain
    assert keys.step_hash(step, PsqlOptions.create([], True)) != plain
    # psql applies -v in order: the last value of a name is the one that counts
    assert keys.step_hash(step, PsqlOptions.create([("x", "1"), ("x", "2")], False)) == keys.step_hash(
        step, PsqlOptions.create([("x", "2")], False))


def test_chain_links_each_state_to_its_parent() -> None:
    steps = [file_step(ScriptFile("a.sql", f"select {n};")) for n in range(3)]
    base = keys.base_id("native:PostgreSQL 15", ["-E", "UTF8"])
    chain = keys.chain(base, steps, PsqlOptions())
    assert len(set(chain)) == 3
    assert chain[0] == keys.state_id(base, keys.step_hash(steps[0], PsqlOptions()))
    assert chain[2] == keys.state_id(chain[1], keys.step_hash(steps[2], PsqlOptions()))
    # editing the last step keeps the prefix
    edited = [*steps[:2], file_step(ScriptFile("a.sql", "select 99;"))]
    assert keys.chain(base, edited, PsqlOptions())[:2] == chain[:2]
    assert keys.chain(base, edited, PsqlOptions())[2] != chain[2]
    # a different base changes everything
    other = keys.base_id("native:PostgreSQL 16", ["-E", "UTF8"])
    assert not set(keys.chain(other, steps, PsqlOptions())) & set(chain)
