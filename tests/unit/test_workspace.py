"""The workspace loader (sqlrs.engine_client.workspace), the bootstrap superuser's base ids
(sqlrs.domain.roles) and durations: no engine, real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs.domain import keys, roles
from sqlrs.domain.durations import parse_duration
from sqlrs.engine_client import workspace
from sqlrs.engine_client.errors import ClientError

OPTIONS = ("-E", "UTF8")


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace, "_cache", {})
    monkeypatch.delenv(workspace.ENV_WORKSPACE, raising=False)
    monkeypatch.delenv(workspace.ENV_POSTGRES_VERSION, raising=False)


def test_the_root_is_the_sqlrs_marker_then_the_git_root_then_the_start(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    deep = project / "app" / "db"
    deep.mkdir(parents=True)
    assert workspace.find_root(str(deep)) == str(deep)
    (project / ".git").mkdir()
    assert workspace.find_root(str(deep)) == str(project)
    (project / "app" / ".sqlrs").mkdir()
    assert workspace.find_root(str(deep)) == str(project / "app")  # the upstream's marker wins
    assert workspace.find_root(str(deep), "..") == str(project / "app")  # --workspace, from the start dir
    assert workspace.find_root(str(deep), str(tmp_path)) == str(tmp_path)


def test_yaml_and_pyproject_are_read_and_yaml_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".sqlrs").mkdir()
    (tmp_path / ".sqlrs" / "config.yaml").write_text(
        "dbms:\n  image: postgres:17\nengine:\n  storePath: /somewhere\npostgres:\n  version: 16\n")
    sub = tmp_path / "svc"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.sqlrs]\npostgres.version = 15\n'
                                        'postgres.superuser = "sqlrs"\n')
    settings = workspace.load(str(sub))
    assert settings.root == str(tmp_path)
    assert settings.values == {"dbms.image": "postgres:17", "postgres.version": "16", "postgres.superuser": "sqlrs"}
    assert settings.sources == [str(sub / "pyproject.toml"), str(tmp_path / ".sqlrs" / "config.yaml")]
    assert settings.request_fields(None) == {"image": "postgres:17", "postgres_version": "16", "superuser": "sqlrs"}
    assert settings.request_fields("mine:1", "14")["image"] == "mine:1"
    monkeypatch.setenv(workspace.ENV_POSTGRES_VERSION, "18")
    assert workspace.choose_postgres_version(settings) == "18"  # this run's choice beats the project's
    assert workspace.choose_postgres_version(settings, suite="17") == "18"
    assert workspace.choose_postgres_version(settings, explicit="15", suite="17") == "15"
    monkeypatch.delenv(workspace.ENV_POSTGRES_VERSION)
    assert workspace.choose_postgres_version(settings, suite="17") == "17"


def test_a_pyproject_without_the_table_is_not_read(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text("this is not [toml at all")
    assert workspace.load(str(tmp_path)).values == {}


@pytest.mark.parametrize(("text", "message"), [
    ("postgres: [1, 2\n", "not a readable YAML file"),
    ("- a list\n", "expected a mapping"),
    ("postgres:\n  version: sixteen\n", "not a major version"),
    ("postgres:\n  superuser: admin\n", "postgres or sqlrs"),
    ("dbms:\n  image: [a]\n", "dbms.image takes"),
])
def test_bad_configuration_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / ".sqlrs").mkdir()
    (tmp_path / ".sqlrs" / "config.yaml").write_text(text)
    with pytest.raises(ClientError) as caught:
        workspace.load(str(tmp_path))
    assert caught.value.exit_code == 2 and message in caught.value.message


def test_a_postgres_base_keeps_its_id_and_a_sqlrs_base_gets_another() -> None:
    assert roles.base_id("native:x", OPTIONS, "postgres") == keys.base_id("native:x", OPTIONS)
    other = roles.base_id("native:x", OPTIONS, "sqlrs")
    assert other != keys.base_id("native:x", OPTIONS)
    assert roles.superuser_of("native:x", OPTIONS, other) == "sqlrs"
    assert roles.superuser_of("native:y", OPTIONS, other) is None
    assert roles.initdb_options(OPTIONS, "sqlrs")[-2:] == ("-U", "sqlrs")
    assert roles.base_sql("sqlrs") == () and "CREATE ROLE sqlrs" in roles.base_sql("postgres")[0]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400),
                                               ("1.5h", 5400), ("500ms", 0.5), ("2d", 172800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "1h 30m", "-5s", "s15"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
