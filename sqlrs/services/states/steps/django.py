"""Django migrations (`prepare:django`): one step per migration, applied by the project's own Django.

Like Alembic's steps (alembic.py), the engine imports neither Django nor the project. The runner
(sqlrs.changelogs.django_runner) runs with the Python the caller runs on, in the project's
directory (where manage.py is), with the caller's environment and `DJANGO_SETTINGS_MODULE` set to
the project's settings. It is started once per job and applies the job's migrations one by one
(host.HostSession), so Python, Django and the project are loaded once per build, not once per
migration: for each one it points the settings' `default` database at that step's build server,
checks that Django's plan on this database is exactly this one migration (what the caller keyed:
its parent state holds everything before it), runs `migrate APP NAME` as `manage.py migrate`
would, signals included (contenttypes and permissions appear in the state where their model
does), and closes its connections before the server is stopped and the state committed.
"""

from __future__ import annotations

from sqlrs.changelogs import django_runner
from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import HostSession, host_login


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
            session = HostSession.kept(run, "django", settings, django_runner.runner_args(settings), login,
                                       django_runner.DONE_MARK)
            result = session.request(run, django_runner.request(app, name, login.env()))
        if result.exit_code == 0:
            return
        session.close()  # it stops after a failed step
        error = django_runner.failure(result.output) or result.last_line() or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: migration {app}.{name} ({path}): {error}",
            details={"step": run.index, "source": run.step.source, "migration": f"{app}.{name}", "file": path,
                     "exit_code": result.exit_code, "error": error, "output": result.output[-8000:]},
        )

