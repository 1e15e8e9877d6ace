"""Django migrations as host steps, read on the caller's side (`prepare:django`, `Client.build(django=...)`,
the test runner and the pytest-django fixture in sqlrs.django).

One step per migration, in the order Django's migration executor would apply them to an empty
database (`migrate` with no arguments, or `migrate APP NAME` with `to`). The plan comes from the
project's own Django: in this process when Django is already set up here with the same settings
(the test runner, pytest-django), else in a child process of this Python (the CLI). Each step runs
later, on the engine's side, as `migrate APP NAME` in the user's Python (services/states/steps/django.py).

What keys a migration (`migration_facts`): its app label and name, its file's content, and
Django's feature release (its schema editor turns the same operations into other SQL across
releases). The settings module, the project's path and the environment do not key it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlrs.engine_client.errors import EXIT_FAILED, EXIT_USAGE, ClientError, usage
from sqlrs.engine_client.hostinputs import host_step, python_file_key

SETTINGS_VARIABLE = "DJANGO_SETTINGS_MODULE"
PLAN_TIMEOUT = 300.0
ERROR_EXIT = 3  # the plan child's exit code for an error it explains (as JSON on stdout)


class PlanError(Exception):
    """A migration plan Django refused to make (conflicts, an unknown --to, settings that do not load)."""

    def __init__(self, message: str, hint: str | None = None, usage: bool = False):
        super().__init__(message)
        self.message, self.hint, self.usage = message, hint, usage


# -- keys ----------------------------------------------------------------------------------------------
def migration_digest(path: Path) -> str:
    """What stands for a migration file's content in its key: its syntax tree, as for Alembic's
    revisions (comments and layout do not count; code and docstrings do)."""
    return python_file_key(path)


def migration_facts(app: str, name: str, path: Path, django_release: str) -> list[tuple[str, str]]:
    """The keyed facts of one migration."""
    return [("migration", f"{app}.{name}"), ("file", migration_digest(path)), ("django", django_release)]


# -- the project ---------------------------------------------------------------------------------------
def find_project(manage: str | os.PathLike[str] | None, cwd: Path) -> tuple[Path, Path | None]:
    """The project's directory (where migrations run) and its manage.py, if any: `manage` names
    manage.py or the directory holding the project; without it, the cwd."""
    path = cwd if manage is None else Path(manage) if Path(manage).is_absolute() else cwd / manage
    if path.is_dir():
        inside = path / "manage.py"
        return path, inside if inside.is_file() else None
    if not path.is_file():
        raise usage(f"{manage}: no such file", hint="--manage names the project's manage.py")
    return path.parent, path


def settings_in_manage(manage: Path) -> str | None:
    """The settings module manage.py sets by default: os.environ.setdefault("DJANGO_SETTINGS_MODULE", X)."""
    try:
        tree = ast.parse(manage.read_text(encoding="utf-8"), str(manage))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault"
                and len(node.args) == 2):
            continue
        name, value = node.args
        if (isinstance(name, ast.Constant) and name.value == SETTINGS_VARIABLE and isinstance(value, ast.Constant)
                and isinstance(value.value, str)):
            return value.value
    return None


def settings_module(settings: str | None, manage: Path | None) -> str:
    """--settings, else DJANGO_SETTINGS_MODULE, else what manage.py sets (Django's own precedence)."""
    module = settings or os.environ.get(SETTINGS_VARIABLE) or (settings_in_manage(manage) if manage else None)
    if not module:
        raise usage("no Django settings module: give --settings MODULE or set DJANGO_SETTINGS_MODULE",
                    hint="run in the directory of the project's manage.py, or give --manage path/to/manage.py")
    return module


# -- the plan ------------------------------------------------------------------------------------------
def current_plan(to: str | None) -> dict[str, Any]:
    """The migrations `migrate` would apply to an empty database, from the Django set up in this
    process: {"django": "5.2", "root": dir the settings module is imported from, "migrations":
    [{"app", "name", "file"}]}. Raises PlanError."""
    import django
    from django.conf import settings
    from django.db.migrations.exceptions import AmbiguityError
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(None)  # no connection: nothing is applied, as on a new database
    loader = executor.loader
    conflicts = loader.detect_conflicts()
    if conflicts:
        names = "; ".join(f"{', '.join(sorted(found))} in {app}" for app, found in sorted(conflicts.items()))
        raise PlanError(f"conflicting migrations (several leaf nodes): {names}",
                        hint="merge them: python manage.py makemigrations --merge")
    if to:
        app, _, prefix = to.partition(".")
        if not app or not prefix:
            raise PlanError(f"--to {to}: expected APP.MIGRATION (e.g. polls.0003 or polls.0003_backfill)",
                            usage=True)
        if app not in loader.migrated_apps:
            raise PlanError(f"--to {to}: app {app!r} has no migrations", usage=True,
                            hint="apps with migrations: " + ", ".join(sorted(loader.migrated_apps)))
        try:
            migration = loader.get_migration_by_prefix(app, prefix)
        except AmbiguityError:
            raise PlanError(f"--to {to}: more than one migration of {app} starts with {prefix!r}",
                            usage=True) from None
        except KeyError:
            raise PlanError(f"--to {to}: {app} has no migration {prefix!r}", usage=True,
                            hint=f"list them with: python manage.py showmigrations {app}") from None
        targets = [(app, migration.name)]
    else:
        targets = loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets, clean_start=True)
    module = sys.modules[settings.SETTINGS_MODULE]
    root = Path(module.__file__ or ".").resolve().parent
    for _ in range(settings.SETTINGS_MODULE.count(".")):
        root = root.parent
    return {"django": "{}.{}".format(*django.VERSION[:2]), "root": str(root),
            "migrations": [{"app": migration.app_label, "name": migration.name,
                            "file": sys.modules[type(migration).__module__].__file__}
                           for migration, _backwards in plan]}


def _configured_here(module: str) -> bool:
    """Django is set up in this process with `module` (never imports Django itself)."""
    if "django.conf" not in sys.modules or "django.apps" not in sys.modules:
        return False
    from django.apps import apps
    from django.conf import settings

    return bool(settings.configured and apps.ready and getattr(settings, "SETTINGS_MODULE", None) == module)


# run in a child with the user's Python: set up Django and print the plan (or the error) as JSON
PLAN_CHILD = """\
import json, sys
from sqlrs.engine_client.django import plan_child
sys.exit(plan_child(sys.argv[1] or None))
"""


def plan_child(to: str | None) -> int:
    """The child's side of `read_plan`: set up Django, print the plan as JSON."""
    try:
        import django
    except ImportError:
        print(json.dumps({"error": f"Django is not installed in {sys.executable}", "usage": True,
                          "hint": "install sqlrs into your Django project's environment"}))
        return ERROR_EXIT
    try:
        django.setup()
        print(json.dumps(current_plan(to)))
        return 0
    except PlanError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint, "usage": exc.usage}))
    except Exception as exc:  # the settings or a migration do not import, say
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        print(json.dumps({"error": f"Django could not load the migrations: {name}: {exc}",
                          "hint": f"does `python manage.py showmigrations` work with {SETTINGS_VARIABLE}="
                                  f"{os.environ.get(SETTINGS_VARIABLE)}?"}))
    return ERROR_EXIT


def read_plan(module: str, to: str | None, project: Path, python: str) -> dict[str, Any]:
    """The plan, from this process's Django when it is set up with `module`, else from a child."""
    if _configured_here(module):
        try:
            return current_plan(to)
        except PlanError as exc:
            raise ClientError(exc.message, EXIT_USAGE if exc.usage else EXIT_FAILED, hint=exc.hint) from None
    env = {**os.environ, SETTINGS_VARIABLE: module}
    try:
        child = subprocess.run([python, "-c", PLAN_CHILD, to or ""], cwd=project, env=env, capture_output=True,
                               text=True, timeout=PLAN_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClientError(f"could not read the Django migrations with {python}: {exc}") from None
    last = (child.stdout.strip().splitlines() or [""])[-1]
    try:
        data: dict[str, Any] = json.loads(last)
    except ValueError:
        tail = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
        raise ClientError(f"could not read the Django migrations: {tail}") from None
    if "error" in data:
        raise ClientError(str(data["error"]), EXIT_USAGE if data.get("usage") else EXIT_FAILED, hint=data.get("hint"))
    return data


def django_steps(manage: str | os.PathLike[str] | None, settings: str | None, to: str | None, cwd: Path,
                 python: str | None = None) -> list[dict[str, Any]]:
    """One step per migration, in Django's plan order, up to `to` (APP.MIGRATION) or every leaf."""
    project, manage_py = find_project(manage, cwd)
    module = settings_module(settings, manage_py)
    python = python or sys.executable
    plan = read_plan(module, to, project, python)
    migrations = plan["migrations"]
    if not migrations:
        raise usage("no Django migrations to apply", hint="create them with: python manage.py makemigrations")
    root = Path(plan["root"])
    steps = []
    for migration in migrations:
        path = Path(migration["file"])
        label = f"{migration['app']}.{migration['name']}"
        inside = path.is_relative_to(project)
        shown = os.path.relpath(path, project) if inside else label
        step = host_step("django", f"{label} {shown}" if inside else label,
                         migration_facts(migration["app"], migration["name"], path, plan["django"]),
                         project, [python], [("settings", module), ("app", migration["app"]),
                                             ("migration", migration["name"]), ("file", shown)])
        if root != project:  # the settings package is imported from elsewhere (a src/ layout, say)
            env = dict(step["run"]["env"])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
            step["run"]["env"] = [[name, value] for name, value in sorted(env.items())]
        steps.append(step)
    return steps
