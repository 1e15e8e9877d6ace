"""The runner that applies (and undoes) Django migrations one at a time with the project's own Django.

Run as `python -u -c RUNNER SETTINGS ERROR_MARK DONE_MARK` with the Python the CLI runs on, in the
project's directory (where manage.py is), with the caller's environment. It takes one JSON request
a line on stdin (`app`, `name`, `connection`: PG* variables of the server; `backwards`) and answers
through serve_loop.HOST_SERVE_LOOP: DONE_MARK and the exit code on stdout and on stderr; a failure
is named on stderr by an ERROR_MARK line (`module.Type: first line`), and the runner stops after it.
Python, Django and the project load once for all requests.

For each request it points the settings' `default` database at the server (the user's settings
module is never edited; its engine is kept when it is a PostgreSQL one, e.g. PostGIS), then:

- forward (the build steps, services/states/steps/django.py): checks that Django's plan on this
  database is exactly this one migration (what the caller keyed: its parent state holds everything
  before it) and runs `migrate APP NAME` as `manage.py migrate` would, signals included
  (contenttypes and permissions appear in the state where their model does);
- backwards (`check:django --backwards`, engine_client/reversals.py): runs `migrate APP PREVIOUS`
  (PREVIOUS: the migration's parent in its app; `zero` for the app's first), once it has checked
  that Django would unapply exactly this migration (the database holds it as its last step, so
  nothing applied depends on it; with an app's branches merged later, a sibling applied before it
  would go too, and that is refused rather than done). Django keeps the content types of models a
  migration removes (and their permissions): the runner deletes those of the models this undo
  removed, as `remove_stale_contenttypes` would, so what the forward step's post_migrate signal
  added is taken back and only what the migration itself left behind remains.

It closes its connections after each request: the server is stopped (or compared) next.
"""

from __future__ import annotations

import json

from sqlrs.changelogs.serve_loop import HOST_SERVE_LOOP

ERROR_MARK = "sqlrs-django-error: "
DONE_MARK = "sqlrs-django-done "

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
def setup():
    import django
    from django.apps import apps
    if not apps.ready:
        django.setup()
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.models import ContentType
        ContentType.objects.clear_cache()  # ids of the previous request's database
def names(plan):
    return ", ".join("%s.%s" % (m.app_label, m.name) for m, _ in plan) or "nothing"
def migrate(app, name):
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    plan = MigrationExecutor(connection).migration_plan([(app, name)])
    if [(m.app_label, m.name, back) for m, back in plan] != [(app, name, False)]:
        raise RuntimeError("the migration plan changed since sqlrs read it: migrating to %s.%s would apply %s"
                           % (app, name, names(plan)))
    call_command("migrate", app, name, interactive=False, verbosity=1)
migrate_apps = {}
def remember(kind):
    def receiver(sender, apps=None, **kwargs):
        migrate_apps[kind] = apps  # the migration state's models before and after
    return receiver
def unapply(app, name):
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.db.models.signals import post_migrate, pre_migrate
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    if (app, name) not in graph.nodes:
        raise RuntimeError("Django has no migration %s.%s" % (app, name))
    targets = sorted(parent[1] for parent in graph.node_map[(app, name)].parents if parent[0] == app) or [None]
    pre_migrate.connect(remember("pre"), weak=False, dispatch_uid="sqlrs-pre")
    post_migrate.connect(remember("post"), weak=False, dispatch_uid="sqlrs-post")
    migrate_apps.clear()
    tried = []
    for target in targets:
        plan = executor.migration_plan([(app, target)])
        if [(m.app_label, m.name, back) for m, back in plan] == [(app, name, True)]:
            call_command("migrate", app, target or "zero", interactive=False, verbosity=1)
            break
        tried.append("`migrate %s %s` would unapply %s" % (app, target or "zero", names(plan)))
    else:
        print("No migrate target unapplies %s.%s alone (%s): unapplying it with the migration executor, as migrate "
              "does" % (app, name, "; ".join(tried)))
        unapply_alone(app, name)
    remove_stale_content_types(migrate_apps.get("pre"), migrate_apps.get("post"))
def unapply_alone(app, name):
    from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    plan = [(graph.nodes[(app, name)], True)]
    applied = [node for node in executor.loader.applied_migrations if node in graph.nodes]
    after_it = sorted(node for node in graph.node_map[(app, name)].children if node in applied)
    if (app, name) not in applied or after_it:
        raise RuntimeError("%s.%s is not the last migration of this database (%s)" % (app, name, ", ".join(
            "%s.%s" % node for node in after_it) + " depend on it" if after_it else "it is not applied"))
    state = executor.loader.project_state(applied, at_end=True)
    emit_pre_migrate_signal(1, False, connection.alias, apps=state.apps, plan=plan)
    after = executor.migrate([(app, name)], plan=plan)
    after.clear_delayed_apps_cache()
    emit_post_migrate_signal(1, False, connection.alias, apps=after.apps, plan=plan)
def models(apps):
    return {(model._meta.app_label, model._meta.model_name) for model in apps.get_models()} if apps else set()
def remove_stale_content_types(before, after):
    removed = sorted(models(before) - models(after))
    if not removed or ("contenttypes", "contenttype") not in models(after):
        return
    from django.db.models import Q
    stale = Q()
    for app_label, model in removed:
        stale |= Q(app_label=app_label, model=model)
    # the historical models: what cascades (permissions, their links) is what exists at this state
    deleted, _ = after.get_model("contenttypes", "ContentType").objects.filter(stale).delete()
    if deleted:
        print("Removed the content types of %s (%d rows with what refers to them)"
              % (", ".join("%s.%s" % item for item in removed), deleted))
def apply(request):
    from django.db import connections
    point_default_database(request["connection"])
    setup()
    try:
        (unapply if request.get("backwards") else migrate)(request["app"], request["name"])
    finally:
        connections.close_all()  # the server is stopped or compared next
def fail(exc, request):
    traceback.print_exc()
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    print(ERROR_MARK + name + (": " + text if text else ""), file=sys.stderr)
os.environ["DJANGO_SETTINGS_MODULE"] = sys.argv[1]
sqlrs_serve(apply, fail, DONE_MARK)
'''


def runner_args(settings: str) -> list[str]:
    """The arguments after `python -u -c` of a runner for the settings module `settings`."""
    return [RUNNER, settings, ERROR_MARK, DONE_MARK]


def argv(python: str, settings: str) -> list[str]:
    """The command line of a runner in the Python `python`."""
    return [python, "-u", "-c", *runner_args(settings)]


def request(app: str, name: str, connection: dict[str, str], *, backwards: bool = False) -> str:
    """One request line: apply (or undo) `app`.`name` on the server of `connection` (PG* variables)."""
    return json.dumps({"app": app, "name": name, "connection": connection, "backwards": backwards})


def failure(output: str) -> str | None:
    """What a failed request's output says went wrong: the runner's ERROR_MARK line, if any."""
    marked = [line for line in output.splitlines() if line.startswith(ERROR_MARK)]
    return marked[-1][len(ERROR_MARK):] if marked else None
