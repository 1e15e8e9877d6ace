"""The program that drives the user's own Alembic, one revision at a time.

It runs as `python -c RUNNER CONFIG ACTION REVISION` with the Python the CLI runs on (where the
user's project, its Alembic and its driver are installed), in the project's directory, with the
database's URL in DATABASE_URL: the engine's Alembic step applies one revision that way
(`upgrade`, sqlrs/services/steps/alembic.py). The client's downgrade check undoes many revisions,
one each on another database, through one `python -c RUNNER serve` that takes them on stdin
(`downgrade`: undo exactly REVISION, sqlrs/engine_client/reversals.py): Alembic, SQLAlchemy and
the project are imported once, not once per revision.

The URL reaches Alembic the way Alembic documents it, as the Config's `sqlalchemy.url` main
option, so the env.py `alembic init` writes works unchanged; the driver the project's alembic.ini
names (postgresql+asyncpg, +psycopg...) is kept, a placeholder URL gets the first driver
installed. The user's files are never edited.

`downgrade` undoes one revision and nothing else, even where Alembic's own targets cannot say
so: `alembic downgrade REV-1` from two heads takes both branches down to their common parent,
and `REV@-1` is an "ambiguous walk" on a merge. The runner hands Alembic the one downgrade step
of REVISION (it must be a head of the database); Alembic then updates its version table as for
any downgrade (a merge is unmerged into its parents, a branch head moves to its parent or goes).
"""

from __future__ import annotations

import json
from typing import Any

ERROR_MARK = "sqlrs-alembic-error: "
DONE_MARK = "sqlrs-alembic-done: "
UPGRADE = "upgrade"
DOWNGRADE = "downgrade"

RUNNER = r'''
import json, os, sys, traceback
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
def downgrade_one(config, revision):
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    script = ScriptDirectory.from_config(config)
    target = script.get_revision(revision)
    def undo(heads, context):
        if target.revision not in set(heads):
            raise CommandError("revision %s is not a head of the database (heads: %s)"
                               % (target.revision, ", ".join(heads) or "none"))
        return [MigrationStep.downgrade_from_script(script.revision_map, target)]
    with EnvironmentContext(config, script, fn=undo, destination_rev=revision):
        script.run_env()
def run(config_file, action, revision):
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
    if action == "downgrade":
        downgrade_one(config, revision)
    else:
        command.upgrade(config, revision)
def reason(exc):
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    return name + (": " + text if text else "")
def serve():
    # one request a line: {"config", "action", "revision", "url"}; one answer a line after it
    for line in sys.stdin:
        request = json.loads(line)
        os.environ["DATABASE_URL"] = request["url"]
        try:
            run(request["config"], request["action"], request["revision"])
            answer = {"ok": True}
        except BaseException as exc:
            traceback.print_exc()
            answer = {"ok": False, "error": reason(exc)}
        sys.stderr.flush()
        print("''' + DONE_MARK + r'''" + json.dumps(answer), flush=True)
try:
    if sys.argv[1] == "serve":
        serve()
    else:
        run(*sys.argv[1:4])
except BaseException as exc:
    traceback.print_exc()
    print("''' + ERROR_MARK + r'''" + reason(exc), file=sys.stderr, flush=True)
    sys.exit(1)
'''


def runner_argv(python: str, config: str, action: str, revision: str) -> list[str]:
    """The command line that applies (`upgrade`) or undoes (`downgrade`) one revision."""
    return [python, "-c", RUNNER, config, action, revision]


def server_argv(python: str) -> list[str]:
    """The command line of a runner that takes requests on stdin (`request`), one at a time, and
    answers each with a line on stdout (`answer`): one Python and one import of Alembic and the
    project for many revisions."""
    return [python, "-c", RUNNER, "serve"]


def request(config: str, action: str, revision: str, url: str) -> str:
    return json.dumps({"config": config, "action": action, "revision": revision, "url": url}) + "\n"


def answer(line: str) -> dict[str, Any] | None:
    """A server's answer to a request ({"ok": bool, "error": reason}), if `line` is one."""
    if not line.startswith(DONE_MARK):
        return None
    parsed: dict[str, Any] = json.loads(line[len(DONE_MARK):])
    return parsed


def error_of(output: str) -> str | None:
    """The runner's one-line reason for failing (`ExceptionType: message`), if it printed one."""
    marked = [line for line in output.splitlines() if line.startswith(ERROR_MARK)]
    return marked[-1][len(ERROR_MARK):] if marked else None
