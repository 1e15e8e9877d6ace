"""Alembic revisions: one step per revision, applied by the user's own Alembic.

The engine does not import Alembic or the user's project. It runs a tiny runner with the
Python the CLI runs on (where the user's project, its Alembic and its driver are installed), in
the CLI's working directory, with the CLI's environment. The runner hands the build server's
URL over the way Alembic documents it, the Config object's `sqlalchemy.url` main option, so the
env.py `alembic init` writes works unchanged; DATABASE_URL is set too, for env.py files that
read it themselves. The user's files are never edited.
"""

from __future__ import annotations

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.steps.base import StepRun
from sqlrs.services.steps.host import host_login, run_host_command, tool_environment

ERROR_MARK = "sqlrs-alembic-error: "

# argv: config file, revision. Keeps the driver the project's alembic.ini names (e.g.
# postgresql+asyncpg, postgresql+psycopg); a placeholder URL gets the first driver installed.
RUNNER = r'''
import os, sys, traceback
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
def main(config_file, revision):
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
    command.upgrade(config, revision)
try:
    main(sys.argv[1], sys.argv[2])
except BaseException as exc:
    traceback.print_exc()
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    print("''' + ERROR_MARK + r'''" + name + (": " + text if text else ""), file=sys.stderr, flush=True)
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
        with host_login(run) as login:
            result = run_host_command(run, [host.argv[0], "-c", RUNNER, config, revision], host.cwd,
                                      tool_environment(host.env, login))
        if result.exit_code == 0:
            return
        marked = [line for line in result.output.splitlines() if line.startswith(ERROR_MARK)]
        error = marked[-1][len(ERROR_MARK):] if marked else result.last_line() or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: revision {revision} ({path}): {error}",
            details={"step": run.index, "source": run.step.source, "revision": revision, "file": path,
                     "exit_code": result.exit_code, "error": error, "output": result.output[-8000:]},
        )
