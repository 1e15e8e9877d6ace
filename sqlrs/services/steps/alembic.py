"""Alembic revisions: one step per revision, applied by the user's own Alembic.

The engine does not import Alembic or the user's project. It runs a tiny runner with the
Python the CLI runs on (where the user's project, its Alembic and its driver are installed), in
the CLI's working directory, with the CLI's environment. The runner hands the build server's
URL over the way Alembic documents it, the Config object's `sqlalchemy.url` main option, so the
env.py `alembic init` writes works unchanged; DATABASE_URL is set too, for env.py files that
read it themselves. The user's files are never edited.
"""

from __future__ import annotations

import json

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.domain.passwords import new_password
from sqlrs.services.instances import INSTANCE_DB, INSTANCE_USER
from sqlrs.services.steps.base import StepRun
from sqlrs.services.steps.host import (
    PYTHON_ERROR_REPORTER,
    HostSession,
    Login,
    host_login,
    read_failure,
    tool_environment,
)

# argv: config file. Reads one revision per line on stdin and upgrades to it, answering
# HostSession.DONE_MARK; one process applies a build's consecutive revisions (Python, SQLAlchemy,
# Alembic and the project import once). Keeps the driver the project's alembic.ini names (e.g.
# postgresql+asyncpg, postgresql+psycopg); a placeholder URL gets the first driver installed. A
# failure is reported by host.PYTHON_ERROR_REPORTER (the statement, LINE/caret, HINT, and the line
# of the revision's file it failed at: the runner asks Alembic where the revision lives).
RUNNER = PYTHON_ERROR_REPORTER + r'''
import os, sys
STEP_FILE = None
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
def main(config_file):
    global STEP_FILE
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.engine import make_url
    config = Config(config_file)
    try:
        configured = config.get_main_option("sqlalchemy.url") or ""
    except Exception:
        configured = ""
    url = make_url(os.environ["DATABASE_URL"]).set(drivername=driver(configured))
    # the option goes through ConfigParser interpolation: a literal % must be doubled
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    for line in sys.stdin:
        revision = line.strip()
        if revision:
            STEP_FILE = revision_file(config, revision)
            command.upgrade(config, revision)
            print("''' + HostSession.DONE_MARK + r'''", flush=True)
try:
    main(sys.argv[1])
except BaseException as exc:
    sqlrs_report_failure(exc, STEP_FILE)
    sys.exit(1)
'''


class AlembicExecutor:
    kind = "alembic"
    state_kind = StateKind.ALEMBIC

    def apply(self, run: StepRun) -> None:
        host = run.step.run
        assert host is not None
        config, revision, path = host.param("config"), host.param("revision"), host.param("file") or "?"
        if not config or not revision:
            raise StepFailed(f"{run.label}: an alembic step names its config and revision")
        key = json.dumps(["alembic", host.argv[0], config, host.cwd, sorted(host.env)])
        session = run.sessions.get(key)
        if not isinstance(session, HostSession) or not session.alive(run):
            if session is not None:
                session.close()
            password = new_password()
            env = tool_environment(host.env, Login("127.0.0.1", run.server.spec.port, INSTANCE_USER, password,
                                                   INSTANCE_DB))
            session = run.sessions[key] = HostSession(run, [host.argv[0], "-c", RUNNER, config], host.cwd, env,
                                                      password)
        with host_login(run, session.password):
            result = session.request(run, revision)
        if result.exit_code == 0:
            return
        report = read_failure(result)
        where = f"{path}:{report.line}" if report.line else path
        error = report.headline or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: revision {revision} ({where}): {error}",
            details={"step": run.index, "source": run.step.source, "revision": revision, "file": path,
                     "exit_code": result.exit_code, **report.details(), "output": result.output[-8000:]},
        )
