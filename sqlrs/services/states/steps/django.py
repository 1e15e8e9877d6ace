"""Django migrations (`prepare:django`): one step per migration, applied by the project's own Django.

Like Alembic's steps (alembic.py), the engine imports neither Django nor the project. A small
runner runs with the Python the caller runs on, in the project's directory (where manage.py is),
with the caller's environment and `DJANGO_SETTINGS_MODULE` set to the project's settings. It is
started once per job and applies the job's migrations one by one (host.HostSession), so Python,
Django and the project are loaded once per build, not once per migration: for each one it
points the settings' `default` database at that step's build server (the user's settings module
is never edited; its engine is kept when it is a PostgreSQL one, e.g. PostGIS), checks that
Django's plan on this database is exactly this one migration (what the caller keyed: its parent
state holds everything before it), runs `migrate APP NAME` as `manage.py migrate` would, signals
included (contenttypes and permissions appear in the state where their model does), and closes
its connections before the server is stopped and the state committed.
"""

from __future__ import annotations

import json

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import HOST_SERVE_LOOP, HostSession, host_login

ERROR_MARK = "sqlrs-django-error: "
DONE_MARK = "sqlrs-django-done "

# argv: the settings module. stdin: one request per line, JSON {"app", "name", "connection": {PG* variables}}.
RUNNER = HOST_SERVE_LOOP + r'''
import json, os, sys, traceback
ERROR_MARK, DONE_MARK = sys.argv[2], sys.argv[3]
def point_default_database(connection_env):
    from django.conf import settings
    os.environ.update(connection_env)  # for migrations that connect on their own
    current = dict(settings.DATABASES.get("default") or {})
    engine = current.get("ENGINE") or ""
    keep = "postgres" in engine or "postgis" in engine
    options = {k: v for k, v in (current.get("OPTIONS") or {}).items() if k not in ("service", "passfile")}
    current.update(ENGINE=engine if keep else "django.db.backends.postgresql", OPTIONS=options if keep else {},
                   NAME=connection_env["PGDATABASE"], USER=connection_env["PGUSER"],
                   PASSWORD=connection_env["PGPASSWORD"], HOST=connection_env["PGHOST"],
                   PORT=connection_env["PGPORT"])
    if "django.db" in sys.modules and "default" in settings.DATABASES:
        from django.db import connections
        connections.close_all()
        connections["default"].settings_dict.update(current)  # the live connection's settings
    settings.DATABASES = {"default": current}
def migrate(app, name):
    import django
    from django.apps import apps
    if not apps.ready:
        django.setup()
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.models import ContentType
        ContentType.objects.clear_cache()  # ids of the previous step's database
    from django.core.management import call_command
    from django.db import connection, connections
    from django.db.migrations.executor import MigrationExecutor
    try:
        plan = [(m.app_label, m.name) for m, _ in MigrationExecutor(connection).migration_plan([(app, name)])]
        if plan != [(app, name)]:
            raise RuntimeError("the migration plan changed since sqlrs read it: migrating to %s.%s would apply %s"
                               % (app, name, ", ".join("%s.%s" % item for item in plan) or "nothing"))
        call_command("migrate", app, name, interactive=False, verbosity=1)
    finally:
        connections.close_all()  # the server stops after the step
def apply(request):
    point_default_database(request["connection"])
    migrate(request["app"], request["name"])
def fail(exc, request):
    traceback.print_exc()
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    print(ERROR_MARK + name + (": " + text if text else ""), file=sys.stderr)
os.environ["DJANGO_SETTINGS_MODULE"] = sys.argv[1]
sqlrs_serve(apply, fail, DONE_MARK)
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
            session = HostSession.kept(run, "django", settings, [RUNNER, settings, ERROR_MARK, DONE_MARK], login,
                                       DONE_MARK)
            result = session.request(run, json.dumps({"app": app, "name": name, "connection": login.env()}))
        if result.exit_code == 0:
            return
        session.close()  # it stops after a failed step
        marked = [line for line in result.output.splitlines() if line.startswith(ERROR_MARK)]
        error = marked[-1][len(ERROR_MARK):] if marked else result.last_line() or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: migration {app}.{name} ({path}): {error}",
            details={"step": run.index, "source": run.step.source, "migration": f"{app}.{name}", "file": path,
                     "exit_code": result.exit_code, "error": error, "output": result.output[-8000:]},
        )

