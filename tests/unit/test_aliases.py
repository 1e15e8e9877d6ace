"""Alias files (sqlrs.entrypoints.cli.aliases): resolution, paths relative to the alias file,
static checks, scanning and writing; real files, no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs.engine_client.errors import ClientError
from sqlrs.entrypoints.cli import aliases

LB_ALIAS = """kind: lb
image: postgres:17
args:
  - update
  - --searchPath
  - jhipster-sample-app
  - --changelog-file
  - jhipster-sample-app/config/liquibase/master.xml
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "examples" / "chinook").mkdir(parents=True)
    (tmp_path / "examples" / "chinook" / "prepare.sql").write_text("\\ir 'data.sql'\n")
    (tmp_path / "examples" / "chinook.prep.s9s.yaml").write_text(
        "kind: psql\nimage: postgres:17\nargs:\n  - -f\n  - chinook/prepare.sql\n")
    (tmp_path / "examples" / "smoke.run.s9s.yaml").write_text("kind: psql\nargs: [-c, select 1]\n")
    return tmp_path


def test_refs_are_stems_from_the_current_directory(ws: Path) -> None:
    examples = ws / "examples"
    assert aliases.resolve("chinook", None, examples, ws) == (examples / "chinook.prep.s9s.yaml", "prepare")
    assert aliases.resolve("examples/smoke", "run", ws, ws) == (examples / "smoke.run.s9s.yaml", "run")
    assert aliases.resolve("../chinook", None, examples / "chinook", ws)[0] == examples / "chinook.prep.s9s.yaml"
    exact = aliases.resolve("chinook.prep.s9s.yaml.", None, examples, ws)
    assert exact == (examples / "chinook.prep.s9s.yaml", "prepare")
    with pytest.raises(ClientError) as missing:
        aliases.resolve("chinook", None, ws, ws)  # never searched for below the workspace
    assert missing.value.exit_code == 4
    with pytest.raises(ClientError) as outside:
        aliases.resolve("../chinook", None, examples, examples)
    assert outside.value.exit_code == 2 and "outside the workspace" in outside.value.message
    (examples / "chinook.run.s9s.yaml").write_text("kind: psql\nargs: [-c, select 1]\n")
    with pytest.raises(ClientError) as both:
        aliases.resolve("chinook", None, examples, ws)
    assert both.value.exit_code == 2 and "both" in both.value.message
    (examples / "plain.yaml").write_text("kind: psql\nargs: [-c, x]\n")
    with pytest.raises(ClientError) as unknown:
        aliases.resolve("plain.yaml.", None, examples, ws)
    assert "without a .prep.s9s.yaml" in unknown.value.message and "--prepare or --run" in str(unknown.value.hint)
    assert aliases.resolve("plain.yaml.", "run", examples, ws) == (examples / "plain.yaml", "run")


def test_paths_inside_an_alias_are_relative_to_its_file(ws: Path) -> None:
    (ws / "examples" / "liquibase").mkdir()
    path = ws / "examples" / "liquibase" / "jhipster-sample-app.prep.s9s.yaml"
    path.write_text(LB_ALIAS)
    alias = aliases.load(path, "prepare")
    base = ws / "examples" / "liquibase"
    assert aliases.rebase("prepare", "lb", alias.args, base) == [
        "update", "--searchPath", str(base / "jhipster-sample-app"), "--changelog-file",
        str(base / "jhipster-sample-app/config/liquibase/master.xml")]
    assert aliases.rebase("prepare", "psql", ["-f", "a.sql", "-fb.sql", "--file=c.sql", "-c", "x.sql", "-f", "-"],
                          base, relative_to=ws) == ["-f", "examples/liquibase/a.sql", "-fexamples/liquibase/b.sql",
                                                    "--file=examples/liquibase/c.sql", "-c", "x.sql", "-f", "-"]
    assert aliases.rebase("run", "pgbench", ["-f", "bench.sql@5", "-T", "30"], base) == [
        "-f", str(base / "bench.sql") + "@5", "-T", "30"]


def test_check_reports_missing_files_and_bad_fields(ws: Path) -> None:
    examples = ws / "examples"
    assert aliases.check(examples / "chinook.prep.s9s.yaml", "prepare", ws) == ("psql", [])
    (examples / "gone.prep.s9s.yaml").write_text("kind: psql\nargs: [-f, nowhere.sql]\n")
    assert aliases.check(examples / "gone.prep.s9s.yaml", "prepare", ws) == (
        "psql", ["referenced path not found: nowhere.sql"])
    for text, problem in (("kind: flyway\nargs: [x]\n", "unknown prepare alias kind"),
                          ("kind: psql\n", "args are required"),
                          ("args: [-f, x]\n", "kind is required"),
                          ("kind: psql\nargs: [-c, x]\nextra: 1\n", "unknown field"),
                          ("kind: [\n", "not a valid prepare alias")):
        (examples / "bad.prep.s9s.yaml").write_text(text)
        _, problems = aliases.check(examples / "bad.prep.s9s.yaml", "prepare", ws)
        assert problems and problem in problems[0], (text, problems)
    (examples / "img.run.s9s.yaml").write_text("kind: psql\nimage: postgres:17\nargs: [-c, x]\n")
    assert "takes no image" in aliases.check(examples / "img.run.s9s.yaml", "run", ws)[1][0]


def test_scan_depth_skips_the_local_directory(ws: Path) -> None:
    (ws / ".sqlrs").mkdir()
    (ws / ".sqlrs" / "hidden.prep.s9s.yaml").write_text("kind: psql\nargs: [-c, x]\n")
    (ws / "top.run.s9s.yaml").write_text("kind: pgbench\nargs: [-T, '1']\n")
    names = [p.name for p, _ in aliases.scan(ws, "recursive", ("prepare", "run"))]
    assert names == ["chinook.prep.s9s.yaml", "smoke.run.s9s.yaml", "top.run.s9s.yaml"]
    assert [p.name for p, _ in aliases.scan(ws, "self", ("prepare", "run"))] == ["top.run.s9s.yaml"]
    assert [p.name for p, _ in aliases.scan(ws, "children", ("run",))] == ["smoke.run.s9s.yaml", "top.run.s9s.yaml"]
    assert aliases.ref_of(ws / "examples" / "chinook.prep.s9s.yaml", ws / "examples" / "chinook", "prepare") == \
        "../chinook"


def test_written_aliases_hold_paths_from_their_own_directory(ws: Path) -> None:
    written = aliases.relativize("prepare", "psql", ["-f", "examples/chinook/prepare.sql", "-v", "a=1"], ws,
                                 ws / "examples")
    assert written == ["-f", "chinook/prepare.sql", "-v", "a=1"]
    text = aliases.render("psql", "postgres:17", written)
    assert text == "kind: psql\nimage: postgres:17\nargs:\n- -f\n- chinook/prepare.sql\n- -v\n- a=1\n"
