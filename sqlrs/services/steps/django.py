"""Django migrations (`prepare:django`): one step per migration, applied by the project's own Django.

Like Alembic's steps (alembic.py), the engine imports neither Django nor the project. A tiny runner
runs with the Python the caller runs on, in the project's directory (where manage.py is), with the
caller's environment and `DJANGO_SETTINGS_MODULE` set to the project's settings. It points the
settings' `default` database at the build server before Django is set up (the user's settings
module is never edited; its engine is kept when it is a PostgreSQL one, e.g. PostGIS), checks that
Django's plan on this database is exactly this one migration (what the caller keyed: its parent
state holds everything before it), and runs `migrate APP NAME` as `manage.py migrate` would,
signals included (contenttypes and permissions appear in the state where their model does).
"""

from __future__ import annotations

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.steps.base import StepRun
from sqlrs.services.steps.host import host_login, run_host_command, tool_environment

ERROR_MARK = "sqlrs-django-error: "

# argv: settings module, app label, migration name. The connection comes in PG* (host.Login.env).
RUNNER = r'''
import os, sys, traceback
def point_default_database():
    from django.conf import settings
    current = dict(settings.DATABASES.get("default") or {})
    engine = current.get("ENGINE") or ""
    keep = "postgres" in engine or "postgis" in engine
    options = {k: v for k, v in (current.get("OPTIONS") or {}).items() if k not in ("service", "passfile")}
    current.update(ENGINE=engine if keep else "django.db.backends.postgresql", OPTIONS=options if keep else {},
                   NAME=os.environ["PGDATABASE"], USER=os.environ["PGUSER"], PASSWORD=os.environ["PGPASSWORD"],
                   HOST=os.environ["PGHOST"], PORT=os.environ["PGPORT"])
    settings.DATABASES = {"default": current}
def main(settings_module, app, name):
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    point_default_database()
    import django
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    plan = [(m.app_label, m.name) for m, backwards in MigrationExecutor(connection).migration_plan([(app, name)])]
    if plan != [(app, name)]:
        raise RuntimeError("the migration plan changed since sqlrs read it: migrating to %s.%s would apply %s"
                           % (app, name, ", ".join("%s.%s" % item for item in plan) or "nothing"))
    call_command("migrate", app, name, interactive=False, verbosity=1)
try:
    main(sys.argv[1], sys.argv[2], sys.argv[3])
except BaseException as exc:
    traceback.print_exc()
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    print("''' + ERROR_MARK + r'''" + name + (": " + text if text else ""), file=sys.stderr, flush=True)
    sys.exit(1)
'''


class DjangoExecutor:
    kind = "django"
    state_kind = StateKind.DJANGO

    def apply(self, run: StepRun) -> None:
        host = run.step.run
        assert host is not None
        settings, app, name = host.param("settings"), host.param("app"), host.param("migration")
        path = host.param("file") or "?"
        if not settings or not app or not name:
            raise StepFailed(f"{run.label}: a django step names its settings, app and migration")
        with host_login(run) as login:
            result = run_host_command(run, [host.argv[0], "-c", RUNNER, settings, app, name], host.cwd,
                                      tool_environment(host.env, login))
        if result.exit_code == 0:
            return
        marked = [line for line in result.output.splitlines() if line.startswith(ERROR_MARK)]
        error = marked[-1][len(ERROR_MARK):] if marked else result.last_line() or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: migration {app}.{name} ({path}): {error}",
            details={"step": run.index, "source": run.step.source, "migration": f"{app}.{name}", "file": path,
                     "exit_code": result.exit_code, "error": error, "output": result.output[-8000:]},
        )
