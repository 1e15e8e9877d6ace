"""Alembic revisions: one step per revision, applied by the user's own Alembic.

The engine does not import Alembic or the user's project. It runs a tiny runner with the
Python the CLI runs on (where the user's project, its Alembic and its driver are installed), in
the CLI's working directory, with the CLI's environment. The runner hands the build server's
URL over the way Alembic documents it, the Config object's `sqlalchemy.url` main option, so the
env.py `alembic init` writes works unchanged; DATABASE_URL is set too, for env.py files that
read it themselves. The user's files are never edited.
"""

from __future__ import annotations

import contextlib
import json

from sqlrs.changelogs.serve_loop import HOST_SERVE_LOOP
from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import (
    PYTHON_ERROR_REPORTER,
    HostSession,
    host_login,
    read_failure,
)

# argv: config file, answer mark. stdin: one request per line, JSON {"revision", "url", "env"}:
# upgrade the database at `url` (the step's build server; `env` its PG* variables) to `revision`,
# then answer the mark and an exit code on stdout and stderr (host.HostSession). One process
# applies a build's consecutive revisions (Python, SQLAlchemy, Alembic and the project import
# once) and waits for the project's next build (steps/idle_runners.py). Keeps the driver the
# project's alembic.ini names (e.g. postgresql+asyncpg, postgresql+psycopg); a placeholder URL gets
# the first driver installed. A failure is reported by host.PYTHON_ERROR_REPORTER (the statement,
# LINE/caret, HINT, and the line of the revision's file it failed at: the runner asks Alembic where
# it lives).
RUNNER = PYTHON_ERROR_REPORTER + HOST_SERVE_LOOP + r'''
import json, os, sys
def revision_file(config, revision):
    try:
        from alembic.script import ScriptDirectory
        return ScriptDirectory.from_config(config).get_revision(revision).path
    except Exception:
        return None
def driver(configured):
    try:
        from sqlalchemy.engine import make_url
        url = make_url(configured)
        if url.get_backend_name() == "postgresql":
            return url.drivername
    except Exception:
        pass
    import importlib.util
    for module, name in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg"),
                         ("pg8000", "postgresql+pg8000"), ("asyncpg", "postgresql+asyncpg")):
        if importlib.util.find_spec(module) is not None:
            return name
    return "postgresql"
def upgrade(config, configured, request):
    from alembic import command
    from sqlalchemy.engine import make_url
    # this step's server (the runner may have served another build before): for env.py files that
    # read DATABASE_URL or PG* themselves
    for name in [name for name in os.environ if name.startswith("PG")]:
        del os.environ[name]
    os.environ.update(request.get("env") or {})
    os.environ["DATABASE_URL"] = request["url"]
    url = make_url(request["url"]).set(drivername=driver(configured))
    # the option goes through ConfigParser interpolation: a literal % must be doubled
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    command.upgrade(config, request["revision"])
def serve(config_file, mark):
    from alembic.config import Config
    import alembic.command, alembic.script, sqlalchemy.engine  # before the first request: see prestart
    config = Config(config_file)
    try:
        configured = config.get_main_option("sqlalchemy.url") or ""
    except Exception:
        configured = ""
    sqlrs_serve(lambda request: upgrade(config, configured, request),
                lambda exc, request: sqlrs_report_failure(exc, revision_file(config, request["revision"])), mark)
serve(sys.argv[1], sys.argv[2])
'''
DONE_MARK = "sqlrs-alembic-done "


class AlembicExecutor:
    kind = "alembic"
    state_kind = StateKind.ALEMBIC

    def prestart(self, run: StepRun) -> None:
        """The runner, started while the build's first server is made: Python, SQLAlchemy and
        Alembic (~0.8 s of imports) load meanwhile (a runner an earlier build left is taken)."""
        host = run.step.run
        config = host.param("config") if host is not None else None
        if config:
            with contextlib.suppress(StepFailed):
                HostSession.kept(run, "alembic", config, [RUNNER, config, DONE_MARK], None, DONE_MARK, reusable=True)

    def apply(self, run: StepRun) -> None:
        host = run.step.run
        assert host is not None
        config, revision, path = host.param("config"), host.param("revision"), host.param("file") or "?"
        if not config or not revision:
            raise StepFailed(f"{run.label}: an alembic step names its config and revision")
        with host_login(run) as login:
            session = HostSession.kept(run, "alembic", config, [RUNNER, config, DONE_MARK], login, DONE_MARK,
                                       reusable=True)
            result = session.request(run, json.dumps({"revision": revision, "url": login.url,
                                                      "env": login.env()}))
        if result.exit_code == 0:
            return
        session.close()  # it stops after a failed step
        report = read_failure(result)
        where = f"{path}:{report.line}" if report.line else path
        error = report.headline or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: revision {revision} ({where}): {error}",
            details={"step": run.index, "source": run.step.source, "revision": revision, "file": path,
                     "exit_code": result.exit_code, **report.details(), "output": result.output[-8000:]},
        )

