"""Host input kinds read on the caller's side: what keys them and what does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sqlrs.domain import keys
from sqlrs.domain.steps import HostRun, PsqlOptions, Step
from sqlrs.engine_client.errors import ClientError as CliError
from sqlrs.engine_client.hostinputs import alembic_steps, caller_env, exec_steps, ini_digest

INI = """\
# a comment
[alembic]
script_location = %(here)s/migrations
sqlalchemy.url = postgresql+psycopg://me:secret@localhost/dev

[loggers]
keys = root
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Alembic revisions cache of these tests is theirs, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def as_step(data: dict) -> Step:
    run = data["run"]
    return Step(kind=data["kind"], source=data["source"], digest=data["digest"],
                keyed=tuple((name, value) for name, value in data["keyed"]),
                run=HostRun(cwd=run["cwd"], argv=tuple(run["argv"]), env=tuple((n, v) for n, v in run["env"]),
                            params=tuple((n, v) for n, v in run["params"])))


def test_exec_key_is_the_command_and_the_declared_files(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "b.sql").write_text("b")
    (tmp_path / "m" / "a.sql").write_text("a")
    (tmp_path / "m" / "deep").mkdir()
    (tmp_path / "m" / "deep" / "c.sql").write_text("c")
    (tmp_path / "notes.txt").write_text("undeclared")
    [step] = exec_steps(["--", "migrate", "up"], ["m/*.sql", "m/deep"], tmp_path)
    assert step["source"] == "migrate up"
    assert step["keyed"][:2] == [["arg", "migrate"], ["arg", "up"]]
    assert [name for name, _ in step["keyed"][2:]] == ["input:m/a.sql", "input:m/b.sql", "input:m/deep/c.sql"]
    parsed = as_step(step)
    parsed.validate()  # the CLI's digest is the one the engine computes
    assert parsed.content_digest() == step["digest"]

    (tmp_path / "notes.txt").write_text("edited")
    assert exec_steps(["migrate", "up"], ["m/*.sql", "m/deep"], tmp_path)[0]["digest"] == step["digest"]
    (tmp_path / "m" / "deep" / "c.sql").write_text("c2")
    assert exec_steps(["migrate", "up"], ["m/*.sql", "m/deep"], tmp_path)[0]["digest"] != step["digest"]
    assert exec_steps(["migrate", "up"], ["m/deep", "m/*.sql"], tmp_path)[0]["digest"] == (
        exec_steps(["migrate", "up"], ["m/*.sql", "m/deep"], tmp_path)[0]["digest"])  # sorted, not in glob order
    with pytest.raises(CliError, match="matches no file"):
        exec_steps(["migrate"], ["nothing/*"], tmp_path)
    with pytest.raises(CliError, match="no command"):
        exec_steps(["--"], [], tmp_path)


def test_the_callers_connection_settings_do_not_travel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "mine")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    monkeypatch.setenv("SHOP_MODE", "test")
    env = dict(caller_env())
    assert "PGPASSWORD" not in env and "DATABASE_URL" not in env and env["SHOP_MODE"] == "test"


def test_alembic_ini_is_keyed_without_its_url_comments_and_layout(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text(INI)
    base = ini_digest(ini)
    ini.write_text(INI.replace("me:secret@localhost/dev", "ci:other@db:5433/ci").replace("# a comment\n", ""))
    assert ini_digest(ini) == base
    ini.write_text(INI.replace("keys = root", "keys = root,alembic"))
    assert ini_digest(ini) != base


def test_alembic_steps_follow_alembics_order_and_keys(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text(INI)
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("# env\n")
    for revision, down in (("a1", None), ("b2", "a1"), ("c3", "a1"), ("d4", ("b2", "c3"))):
        (versions / f"{revision}.py").write_text(
            f"revision = {revision!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n"
            "def upgrade():\n    pass\n")
    steps = alembic_steps("alembic.ini", None, tmp_path, python="/usr/bin/python3")
    order = [step["run"]["params"][1][1] for step in steps]
    assert order[0] == "a1" and set(order[1:3]) == {"b2", "c3"} and order[3] == "d4"
    assert steps[0]["source"] == "a1 migrations/versions/a1.py"
    assert steps[0]["run"]["argv"] == ["/usr/bin/python3"]
    for step in steps:
        as_step(step).validate()
    assert [s["run"]["params"][1][1] for s in alembic_steps("alembic.ini", "b2", tmp_path)] == ["a1", "b2"]
    # the same project elsewhere: same keys
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    assert [s["digest"] for s in alembic_steps("alembic.ini", None, moved)] == [s["digest"] for s in steps]
    # editing one revision's code changes its key only; editing env.py's changes all
    (moved / "migrations" / "versions" / "d4.py").write_text(
        (versions / "d4.py").read_text() + "    print('edited')\n")
    edited = alembic_steps("alembic.ini", None, moved)
    assert [a["digest"] == b["digest"] for a, b in zip(edited, steps, strict=True)] == [True, True, True, False]
    (moved / "migrations" / "env.py").write_text("# env edited\nimport os\n")
    assert not {s["digest"] for s in alembic_steps("alembic.ini", None, moved)} & {s["digest"] for s in steps}
    with pytest.raises(CliError, match="Can't locate revision"):
        alembic_steps("alembic.ini", "zz", tmp_path)
    with pytest.raises(CliError, match="no such Alembic config"):
        alembic_steps("missing.ini", None, tmp_path)
    # an alembic step's key is its kind and facts: psql options do not touch it
    alembic_step = as_step(steps[0])
    assert keys.step_hash(alembic_step, PsqlOptions.create([("x", "1")], True)) == keys.step_hash(
        alembic_step, PsqlOptions())


def test_alembic_revisions_come_from_a_cache_until_a_file_of_the_project_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing Alembic to list the revisions costs ~0.8 s per command or test session: the list is
    cached, keyed by the content of every Python file of the script directory, alembic.ini and
    the target, and read by Alembic again whenever one of them differs."""
    from sqlrs.engine_client import hostinputs

    reads: list[str | None] = []
    read = hostinputs._read_alembic_revisions

    def counted(ini: Path, to: str | None, cwd: Path) -> hostinputs.AlembicRevisions:
        reads.append(to)
        return read(ini, to, cwd)

    monkeypatch.setattr(hostinputs, "_read_alembic_revisions", counted)
    (tmp_path / "alembic.ini").write_text(INI)
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("# env\n")

    def revision(name: str, down: str | None, body: str = "pass") -> None:
        (versions / f"{name}.py").write_text(f"revision = {name!r}\ndown_revision = {down!r}\n"
                                             f"def upgrade():\n    {body}\n")

    def order(to: str | None = None) -> list[str]:
        return [step["run"]["params"][1][1] for step in alembic_steps("alembic.ini", to, tmp_path)]

    revision("a1", None)
    revision("b2", "a1")
    assert order() == ["a1", "b2"] and len(reads) == 1
    first = alembic_steps("alembic.ini", None, tmp_path)
    assert order() == ["a1", "b2"] and len(reads) == 1  # from the cache
    assert [s["digest"] for s in alembic_steps("alembic.ini", None, tmp_path)] == [s["digest"] for s in first]
    assert order("a1") == ["a1"] and len(reads) == 2  # another target
    revision("c3", "b2")
    assert order() == ["a1", "b2", "c3"] and len(reads) == 3  # a new revision
    revision("c3", "a1")  # its parent changed, not its size: two heads now
    assert sorted(order()[1:]) == ["b2", "c3"] and len(reads) == 4
    located = INI.replace("[alembic]",
                          "[alembic]\npath_separator = os\nversion_locations = %(here)s/migrations/versions")
    (tmp_path / "alembic.ini").write_text(located)
    order()
    order()
    assert len(reads) == 6  # revisions elsewhere than the script directory: Alembic reads them each time
