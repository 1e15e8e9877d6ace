"""Django migrations read on the caller's side (sqlrs.engine_client.django): Django's own plan order,
what keys a migration and what does not, the settings module, --to, and refusals. Real Django in a
child process (as the CLI reads them); no database is needed to plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostinputs import as_step

from sqlrs.domain import keys
from sqlrs.domain.steps import PsqlOptions
from sqlrs.engine_client.django import django_steps, find_project, settings_in_manage, settings_module
from sqlrs.engine_client.errors import ClientError

MANAGE = '''import os, sys
if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_a.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
'''
SETTINGS = '''SECRET_KEY = "x"
INSTALLED_APPS = ["alpha", "beta"]
DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "nowhere", "HOST": "192.0.2.1"}}
USE_TZ = True
'''
MIGRATION = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = {dependencies!r}
    operations = []
'''
# beta.0001 needs alpha.0001, and alpha.0002 needs beta.0001: the plan interleaves the apps
MIGRATIONS = {
    ("alpha", "0001_initial"): [],
    ("beta", "0001_initial"): [("alpha", "0001_initial")],
    ("alpha", "0002_second"): [("alpha", "0001_initial"), ("beta", "0001_initial")],
    ("beta", "0002_second"): [("beta", "0001_initial")],
}
ORDER = ["alpha.0001_initial", "beta.0001_initial", "alpha.0002_second", "beta.0002_second"]


def write_project(root: Path, migrations: dict[tuple[str, str], list[tuple[str, str]]] = MIGRATIONS) -> Path:
    (root / "site_a").mkdir(parents=True)
    (root / "site_a" / "__init__.py").write_text("")
    (root / "site_a" / "settings.py").write_text(SETTINGS)
    (root / "manage.py").write_text(MANAGE)
    for (app, name), dependencies in migrations.items():
        directory = root / app / "migrations"
        directory.mkdir(parents=True, exist_ok=True)
        (root / app / "__init__.py").write_text("")
        (directory / "__init__.py").write_text("")
        (directory / f"{name}.py").write_text(MIGRATION.format(dependencies=dependencies))
    return root


def labels(steps: list[dict]) -> list[str]:
    return [f"{dict(s['run']['params'])['app']}.{dict(s['run']['params'])['migration']}" for s in steps]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    return write_project(tmp_path / "proj")


def test_one_step_per_migration_in_djangos_plan_order(project: Path) -> None:
    steps = django_steps(None, None, None, project)
    assert labels(steps) == ORDER
    assert steps[0]["kind"] == "django"
    assert steps[0]["source"] == "alpha.0001_initial alpha/migrations/0001_initial.py"
    params = dict(steps[0]["run"]["params"])
    assert params == {"settings": "site_a.settings", "app": "alpha", "migration": "0001_initial",
                      "file": "alpha/migrations/0001_initial.py"}
    assert steps[0]["run"]["cwd"] == str(project) and steps[0]["run"]["argv"] == [sys.executable]
    assert [name for name, _ in steps[0]["keyed"]] == ["migration", "file", "django"]
    for step in steps:
        as_step(step).validate()  # the digest the CLI sends is the one the engine computes


def test_keys_follow_the_files_not_the_place_or_the_settings_module(project: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    steps = django_steps(None, None, None, project)
    moved = shutil.copytree(project, tmp_path / "elsewhere")
    (moved / "site_a" / "settings_ci.py").write_text("from site_a.settings import *\nDEBUG = True\n")
    assert [s["digest"] for s in django_steps(None, "site_a.settings_ci", None, moved)] == [
        s["digest"] for s in steps]
    # editing one migration keys it anew, and only it (its children's states follow from the chain)
    target = moved / "alpha" / "migrations" / "0002_second.py"
    target.write_text(target.read_text() + "# a comment: the code is the same\n")
    assert [a["digest"] for a in django_steps(None, None, None, moved)] == [b["digest"] for b in steps]
    target.write_text(target.read_text() + "EDITED = True\n")
    edited = django_steps(None, None, None, moved)
    assert [a["digest"] == b["digest"] for a, b in zip(edited, steps, strict=True)] == [True, True, False, True]
    # psql options change nothing a Django step does
    step = as_step(steps[0])
    assert keys.step_hash(step, PsqlOptions.create([("x", "1")], True)) == keys.step_hash(step, PsqlOptions())


def test_to_stops_where_migrate_app_name_would(project: Path) -> None:
    assert labels(django_steps(None, None, "beta.0001", project)) == ["alpha.0001_initial", "beta.0001_initial"]
    assert labels(django_steps(None, None, "alpha.0002_second", project)) == ORDER[:3]
    with pytest.raises(ClientError, match="has no migration") as missing:
        django_steps(None, None, "beta.0009", project)
    assert missing.value.exit_code == 2
    with pytest.raises(ClientError, match="has no migrations"):
        django_steps(None, None, "gamma.0001", project)
    with pytest.raises(ClientError, match=r"expected APP\.MIGRATION"):
        django_steps(None, None, "beta", project)
    with pytest.raises(ClientError, match="more than one migration"):
        django_steps(None, None, "beta.0", project)


def test_the_settings_module_follows_djangos_precedence(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manage = project / "manage.py"
    assert settings_in_manage(manage) == "site_a.settings"
    assert settings_module(None, manage) == "site_a.settings"
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "site_a.from_env")
    assert settings_module(None, manage) == "site_a.from_env"
    assert settings_module("site_a.given", manage) == "site_a.given"
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    with pytest.raises(ClientError, match="no Django settings module"):
        settings_module(None, None)
    assert find_project("manage.py", project) == (project, manage)
    assert find_project(None, project) == (project, manage)
    assert find_project(str(project), project.parent) == (project, manage)
    with pytest.raises(ClientError, match="no such file"):
        find_project("nope/manage.py", project)


def test_what_django_refuses_is_a_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two leaves in one app: Django's migrate refuses them, and so does sqlrs, with Django's remedy
    extra = project / "alpha" / "migrations" / "0002_other.py"
    extra.write_text(MIGRATION.format(dependencies=[("alpha", "0001_initial")]))
    with pytest.raises(ClientError, match="conflicting migrations") as conflict:
        django_steps(None, None, None, project)
    assert "makemigrations --merge" in (conflict.value.hint or "")
    extra.unlink()
    # settings that do not import
    with pytest.raises(ClientError, match=r"could not load the migrations.*No module named 'site_b'"):
        django_steps(None, "site_b.settings", None, project)


def test_a_process_with_django_set_up_plans_in_process_with_the_same_keys(project: Path) -> None:
    """The test runner and pytest-django plan with the Django they already set up: same steps."""
    expected = [s["digest"] for s in django_steps(None, None, None, project)]
    script = ("import json, os, sys, django\n"
              "os.environ['DJANGO_SETTINGS_MODULE'] = 'site_a.settings'\n"
              "sys.path.insert(0, os.getcwd())\n"
              "django.setup()\n"
              "import subprocess\n"
              "real_run = subprocess.run\n"
              "subprocess.run = lambda *a, **k: (_ for _ in ()).throw(AssertionError('no child expected'))\n"
              "from pathlib import Path\n"
              "from sqlrs.engine_client.django import django_steps\n"
              "print(json.dumps([s['digest'] for s in django_steps(None, None, None, Path.cwd())]))\n")
    child = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, check=False,
                           env={"PATH": "/usr/bin:/bin"})
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == expected
