"""Undoing Alembic revisions one at a time, with the user's own Alembic: the downgrade check's tool.

`sqlrs check:alembic --downgrades` (sqlrs/engine_client/reversals.py) runs this module as
`python -m sqlrs.changelogs.alembic_runner` with the Python the CLI runs on (the one sqlrs is
installed in, with the user's project, its Alembic and its driver), in the project's directory.
It takes requests on stdin, one JSON object a line (`config`, `revision`, `url`: undo REVISION on
the database at URL) and answers each with a line `DONE_MARK {"ok": bool, "error": reason}` on
stdout, so Python, SQLAlchemy, Alembic and the project are imported once for all revisions. Its
logging and any traceback go to stderr.

The URL reaches Alembic as the Config's `sqlalchemy.url` main option, the way Alembic documents
it, so the env.py `alembic init` writes works unchanged (DATABASE_URL is set too); the driver the
project's alembic.ini names (postgresql+asyncpg, +psycopg...) is kept, a placeholder URL gets the
first driver installed. The user's files are never edited.

Exactly one revision is undone, even where Alembic's own targets cannot say so: `alembic
downgrade REV-1` from two heads takes both branches down to their common parent, and `REV@-1` is
an "ambiguous walk" on a merge. The runner hands Alembic the one downgrade step of REV (which must
be a head of the database), as `command.downgrade` does internally; Alembic then updates its
version table as for any downgrade (a merge is unmerged into its parents, a branch head moves to
its parent or goes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from typing import Any

DONE_MARK = "sqlrs-alembic-done: "
DRIVERS = (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg"), ("pg8000", "postgresql+pg8000"),
           ("asyncpg", "postgresql+asyncpg"))


def argv(python: str) -> list[str]:
    """The command line of a runner for the Python `python`."""
    return [python, "-m", "sqlrs.changelogs.alembic_runner"]


def request(config: str, revision: str, url: str) -> str:
    """One request line: undo `revision` (of the project `config`) on the database at `url`."""
    return json.dumps({"config": config, "revision": revision, "url": url}) + "\n"


def answer(line: str) -> dict[str, Any] | None:
    """The runner's answer to a request (`ok`, `error`), if `line` is one."""
    if not line.startswith(DONE_MARK):
        return None
    parsed: dict[str, Any] = json.loads(line[len(DONE_MARK):])
    return parsed


# -- in the runner process -----------------------------------------------------------------------------
def driver(configured: str) -> str:
    """The SQLAlchemy driver to connect with: the one the project's URL names, else one installed."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(configured)
        if url.get_backend_name() == "postgresql":
            return str(url.drivername)
    except Exception:  # a placeholder such as driver://user:pass@localhost/dbname
        pass
    for module, name in DRIVERS:
        if importlib.util.find_spec(module) is not None:
            return name
    return "postgresql"


def configured(config_file: str, url: str) -> Any:
    """The project's Alembic Config with `url` (in the project's driver) as its sqlalchemy.url."""
    from alembic.config import Config
    from sqlalchemy.engine import make_url

    config = Config(config_file)
    try:
        current = config.get_main_option("sqlalchemy.url") or ""
    except Exception:  # an interpolation error in someone's local URL
        current = ""
    rendered = make_url(url).set(drivername=driver(current)).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))  # ConfigParser interpolation
    return config


def downgrade_one(config: Any, revision: str) -> None:
    """Undo exactly `revision`, a head of the database, keeping every other applied revision."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(config)
    target = script.get_revision(revision)
    if target is None:
        raise CommandError(f"no revision {revision}")

    def undo(heads: Any, context: Any) -> list[Any]:
        if target.revision not in set(heads):
            raise CommandError(f"revision {target.revision} is not a head of the database "
                               f"(heads: {', '.join(heads) or 'none'})")
        return [MigrationStep.downgrade_from_script(script.revision_map, target)]

    with EnvironmentContext(config, script, fn=undo, destination_rev=revision):
        script.run_env()


def reason(exc: BaseException) -> str:
    """`module.ExceptionType: first line of its message`."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = (str(exc).strip().splitlines() or [""])[0]
    return name + (f": {text}" if text else "")


def main() -> None:
    for line in sys.stdin:
        wanted = json.loads(line)
        os.environ["DATABASE_URL"] = wanted["url"]  # for env.py files that read it themselves
        try:
            downgrade_one(configured(wanted["config"], wanted["url"]), wanted["revision"])
            done: dict[str, Any] = {"ok": True}
        except BaseException as exc:  # the user's env.py or revision: anything, SystemExit included
            traceback.print_exc()
            done = {"ok": False, "error": reason(exc)}
        sys.stderr.flush()
        print(DONE_MARK + json.dumps(done), flush=True)


if __name__ == "__main__":
    main()
