"""pytest plugin: every test (or module) gets its own fresh PostgreSQL instance from sqlrs.

Registered through the `pytest11` entry point, so installing sqlrs makes the fixtures available.
It stays inert (no engine, no import of the client) until a test asks for one of its fixtures.

Fixtures:
    sqlrs_instance         a fresh instance of the test's state (function scope), removed afterwards
    sqlrs_dsn              its DSN (a string)
    sqlrs_module_instance  one instance shared by the tests of a module
    sqlrs_state            the test's state (built once per session; for tests that start several)
    sqlrs_client           the session's sqlrs.Client
    sqlrs_url              the instance as a SQLAlchemy URL (postgresql+psycopg://...; ini sqlrs_driver)
    sqlrs_engine           a SQLAlchemy Engine on it (disposed after the test)
    sqlrs_session          a SQLAlchemy ORM Session on that engine (closed after the test)
    sqlrs_async_engine     a SQLAlchemy AsyncEngine on it (ini sqlrs_async_driver; NullPool)

The SQLAlchemy fixtures import SQLAlchemy when a test uses one, never before. Every test has a
database of its own, so a session commits as it likes: no transaction to roll back afterwards.

The state comes from the closest `@pytest.mark.sqlrs(files=[...], sql=[...], variables={...},
psql_args=[...], pool=N)` (paths relative to the test file), else from the configuration
(`sqlrs_files`, `sqlrs_sql`, `sqlrs_psql_args` ini options, paths relative to the ini file, or
`--sqlrs-file` on the command line). Paths may use environment variables (`${SAKILA_DIR}/x.sql`).
The state is built once (concurrent pytest-xdist workers included: the engine builds a state
once and makes the others wait) and cloned for every test.

Other input kinds: `alembic="alembic.ini"` (`to="REV"`) or `exec=[...]` (`inputs=[globs]`) in the
marker, or the `sqlrs_alembic` (`sqlrs_alembic_to`) / `sqlrs_exec` (`sqlrs_inputs`) ini options.
Alembic runs in the directory of its config file; a command in the directory of the test file
(marker) or of the ini file.

What a test gets (`sqlrs_instance_kind`): `auto` gives database instances on the `copy` store (a
database of its own in the state's shared server, copied ahead) and server instances on btrfs and
reflink (a server of its own, started ahead); docs/python-api.md says why, with the numbers.

Django (pytest-django): with `sqlrs_django = true` the plugin replaces pytest-django's
`django_db_setup`: each pytest process (each xdist worker) gets its test database from sqlrs, an
instance of the state after the project's last migration, one cached state per migration
(sqlrs/entrypoints/pytest/django_fixtures.py).

Warm pool (`sqlrs_pool_size` / `--sqlrs-pool N`, server instances): the engine keeps N started
spares of the state ready, so handing one to a test is a single API call of a few milliseconds.
The pool fills in the background while tests run: the first test waits for one spare at most
(with `sqlrs_pool_prefill` it waits until the pool is full). Every process of a run (each xdist
worker) holds the pool; when the last one finishes, the engine drains it in the background (the
session does not wait).

Sessions: each process tells the engine when its tests begin taking instances of a state and when
they are done (`Client.begin_session`/`end_session`), so the engine keeps spares (copies made ahead,
warm instances) at the run's demand, starting at what the previous run took, and lets them fall
back to a small idle level within seconds of the end.

Cleanup: the instances and pool holds of a session belong to its process (pid and start time).
Should the process die without cleaning up (SIGKILL, a crashed xdist worker, Ctrl+C at the wrong
moment), the engine notices within seconds and removes them.

A state that fails to build fails every test that needs it with the step's one-line error and
what PostgreSQL said under it (`LINE n:` and the caret, DETAIL, HINT, a host step's statement),
built once per session (per xdist worker): later tests get the same error without another build.

Checks (`sqlrs check:alembic --downgrades`, `check:django --backwards` in a test):
`assert_downgrades_restore(sqlrs_client, "alembic.ini")` and `assert_backwards_restore(sqlrs_client,
"manage.py")` fail the test, naming each revision (migration) whose undo does not restore its
parent's state and what differs.

`--sqlrs-keep-failed` keeps a failing test's instance (no TTL) and prints its DSN. Other
instances get an idle TTL (`sqlrs_ttl`, default 600 s) so a killed test run leaves nothing
behind for long. The terminal summary reports how long tests waited for their instance
(`--sqlrs-report FILE` writes every number as JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sqlrs import extensions
from sqlrs.entrypoints.pytest.session import PREFILL_TIMEOUT, SESSION_KEY, Spec, SqlrsSession, build_error_message

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.orm import Session

    from sqlrs.entrypoints.library.client import Client, DowngradeReport, Instance, State

__all__ = ["PREFILL_TIMEOUT", "Spec", "SqlrsSession", "assert_backwards_restore", "assert_downgrades_restore",
           "build_error_message"]  # and the hooks and fixtures

REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
INSTANCES_KEY = pytest.StashKey[list["Instance"]]()


# -- options -----------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqlrs", "sqlrs: fresh PostgreSQL instances per test")
    group.addoption("--sqlrs-file", action="append", default=None, dest="sqlrs_file", metavar="FILE",
                    help="SQL file of the default state (repeatable; overrides the sqlrs_files ini option).")
    group.addoption("--sqlrs-psql-args", default=None, dest="sqlrs_psql_args", metavar="ARGS",
                    help="psql arguments of the default state, e.g. \"-f schema.sql -v env=test\".")
    group.addoption("--sqlrs-pool", type=int, default=None, dest="sqlrs_pool", metavar="N",
                    help="Keep N started instances of each state ready (0: no warm pool).")
    group.addoption("--sqlrs-keep-failed", action="store_true", default=None, dest="sqlrs_keep_failed",
                    help="Keep the instance of a failing test and print its DSN.")
    group.addoption("--sqlrs-state-dir", default=None, dest="sqlrs_state_dir", metavar="DIR",
                    help="sqlrs state directory (default: SQLRS_STATE_DIR or the platform default).")
    group.addoption("--sqlrs-runtime", default=None, dest="sqlrs_runtime",
                    choices=["auto", *extensions.names(extensions.RUNTIMES)],
                    help="Where PostgreSQL runs: auto or a runtime's name.")
    group.addoption("--sqlrs-image", default=None, dest="sqlrs_image", help="Container image (docker/podman).")
    group.addoption("--sqlrs-postgres-version", default=None, dest="sqlrs_postgres_version", metavar="MAJOR",
                    help="PostgreSQL major of this run's states (e.g. 16; overrides SQLRS_POSTGRES_VERSION, the "
                         "sqlrs_postgres_version ini option and the workspace's postgres.version).")
    group.addoption("--sqlrs-ttl", type=int, default=None, dest="sqlrs_ttl", metavar="SECONDS",
                    help="Idle TTL of the instances tests get (0: none).")
    group.addoption("--sqlrs-instance-kind", default=None, dest="sqlrs_instance_kind",
                    choices=["auto", "server", "database"],
                    help="server: each test gets a PostgreSQL server of its own; database: a database of its "
                         "own in its state's shared server (faster without copy-on-write; database-level "
                         "isolation); auto (default): database on the copy store, else server.")
    group.addoption("--sqlrs-report", default=None, dest="sqlrs_report", metavar="FILE",
                    help="Write per-test instance wait times and prepare times as JSON (give it as "
                         "--sqlrs-report=FILE: pytest may take a separate FILE argument for a test path).")
    parser.addini("sqlrs_files", "SQL files of the default state, in order (relative to the ini file)",
                  type="linelist", default=[])
    parser.addini("sqlrs_sql", "SQL commands run after sqlrs_files (one per line)", type="linelist", default=[])
    parser.addini("sqlrs_psql_args", "psql arguments of the default state (-f, -c, -v, -1)", type="args",
                  default=[])
    parser.addini("sqlrs_pool_size", "Warm pool size per state (0: none)", default="0")
    parser.addini("sqlrs_pool_prefill", "Wait for the warm pool to fill before the first test", type="bool",
                  default=False)
    parser.addini("sqlrs_ttl", "Idle TTL in seconds of the instances tests get (0: none)", default="600")
    parser.addini("sqlrs_state_dir", "sqlrs state directory", default="")
    parser.addini("sqlrs_runtime", "auto or a runtime's name: " + ", ".join(extensions.names(extensions.RUNTIMES)),
                  default="")
    parser.addini("sqlrs_image", "Container image for docker/podman", default="")
    parser.addini("sqlrs_postgres_version", "PostgreSQL major of this suite's states, e.g. 16 (SQLRS_POSTGRES_VERSION "
                  "overrides it; default: the workspace's postgres.version, else the engine's)", default="")
    parser.addini("sqlrs_allow_outside", "Read SQL files outside the workspace (the git root)", type="bool",
                  default=False)
    parser.addini("sqlrs_keep_failed", "Keep failing tests' instances", type="bool", default=False)
    parser.addini("sqlrs_instance_kind", "auto, server or database (see --sqlrs-instance-kind)", default="auto")
    parser.addini("sqlrs_driver", "SQLAlchemy driver of sqlrs_url, sqlrs_engine, sqlrs_session (postgresql+DRIVER)",
                  default="psycopg")
    parser.addini("sqlrs_async_driver", "SQLAlchemy driver of sqlrs_async_engine (psycopg or asyncpg)",
                  default="psycopg")
    _add_input_options(parser)


def _add_input_options(parser: pytest.Parser) -> None:
    """The input kinds besides psql's (sqlrs prepare:alembic, prepare:exec)."""
    parser.addini("sqlrs_alembic", "Alembic config of the default state (one state per revision)", default="")
    parser.addini("sqlrs_alembic_to", "Last Alembic revision to apply (default: every head)", default="")
    parser.addini("sqlrs_exec", "Command that builds the default state (DATABASE_URL, PG* set)", type="args",
                  default=[])
    parser.addini("sqlrs_inputs", "Globs of the files sqlrs_exec reads (their content keys the state)",
                  type="linelist", default=[])
    parser.addini("sqlrs_django", "pytest-django takes its test databases from sqlrs (django_db_setup): one "
                  "cached state per migration", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlrs(files=None, sql=None, variables=None, psql_args=None, single_transaction=False, pool=None, "
        "alembic=None, to=None, exec=None, inputs=None): "
        "the state the test's sqlrs instance starts from (paths relative to the test file)",
    )
    config.stash[SESSION_KEY] = SqlrsSession(config)
    if config.getini("sqlrs_django"):
        if not config.pluginmanager.hasplugin("django"):
            raise pytest.UsageError("sqlrs_django = true: pytest-django is not active here "
                                    "(pip install pytest-django into this environment)")
        from sqlrs.entrypoints.pytest import django_fixtures

        # registered after pytest-django (loaded with the entry points, before any configure):
        # of two plugins' fixtures of one name, the later one is used
        config.pluginmanager.register(django_fixtures, "sqlrs-django")


def pytest_sessionfinish(session: pytest.Session) -> None:
    sqlrs_session = session.config.stash.get(SESSION_KEY, None)
    if sqlrs_session is not None:
        sqlrs_session.finish()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect what a worker measured and kept."""
    sqlrs_session = node.config.stash.get(SESSION_KEY, None)
    output = getattr(node, "workeroutput", {}) or {}
    if sqlrs_session is not None and "sqlrs" in output:
        sqlrs_session.merge(json.loads(output["sqlrs"]))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    sqlrs_session = config.stash.get(SESSION_KEY, None)
    if sqlrs_session is not None:
        for line in sqlrs_session.summary_lines():
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                           pytest.TestReport]:
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    sqlrs_session = item.config.stash.get(SESSION_KEY, None)
    if report.failed and sqlrs_session is not None and sqlrs_session.keep_failed:
        for instance in item.stash.get(INSTANCES_KEY, []):
            report.sections.append(("sqlrs", f"kept instance {instance.id} of this failed test: {instance.dsn}\n"
                                             f"(remove it with: sqlrs rm {instance.id})"))
    return report


def _failed(node: pytest.Item) -> bool:
    return any(report.failed for report in node.stash.get(REPORTS_KEY, {}).values())


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sqlrs_client(pytestconfig: pytest.Config) -> Client:
    """The session's sqlrs.Client (engine found or spawned on first use)."""
    return pytestconfig.stash[SESSION_KEY].client


@pytest.fixture
def sqlrs_state(request: pytest.FixtureRequest) -> State:
    """The state of this test (marker or configuration), built once per session."""
    session = request.config.stash[SESSION_KEY]
    return session.state(session.spec_for(request.node))


@pytest.fixture
def sqlrs_instance(request: pytest.FixtureRequest) -> Iterator[Instance]:
    """A fresh instance of the test's state, removed after the test (kept with --sqlrs-keep-failed)."""
    session: SqlrsSession = request.config.stash[SESSION_KEY]
    node = request.node
    instance = session.instance(node, session.spec_for(node))
    node.stash.setdefault(INSTANCES_KEY, []).append(instance)
    try:
        yield instance
    finally:
        session.done(node, instance, _failed(node))


@pytest.fixture
def sqlrs_dsn(sqlrs_instance: Instance) -> str:
    """The DSN of the test's fresh instance."""
    return sqlrs_instance.dsn


@pytest.fixture(scope="module")
def sqlrs_module_instance(request: pytest.FixtureRequest) -> Iterator[Instance]:
    """One instance for all tests of a module (state: the module's marker or the configuration)."""
    session: SqlrsSession = request.config.stash[SESSION_KEY]
    module = request.node
    instance = session.instance(module, session.spec_for(module))
    try:
        yield instance
    finally:
        failed = any(_failed(item) for item in request.session.items  # a test that used it failed
                     if item.path == module.path and "sqlrs_module_instance" in getattr(item, "fixturenames", ())
                     and REPORTS_KEY in item.stash)
        session.done(module, instance, failed)


# -- SQLAlchemy (imported when one of these fixtures is used) ----------------------------------------
def _needs_sqlalchemy(fixture: str) -> None:
    import importlib.util

    if importlib.util.find_spec("sqlalchemy") is None:
        pytest.fail(f"{fixture} needs SQLAlchemy 2 in this environment (pip install sqlalchemy)", pytrace=False)


@pytest.fixture
def sqlrs_url(sqlrs_instance: Instance, pytestconfig: pytest.Config) -> str:
    """The test's instance as a SQLAlchemy URL: `postgresql+psycopg://...` (driver: `sqlrs_driver`)."""
    return sqlrs_instance.url(driver=str(pytestconfig.getini("sqlrs_driver")).strip() or None)


@pytest.fixture
def sqlrs_engine(sqlrs_url: str) -> Iterator[Engine]:
    """A SQLAlchemy Engine on the test's own database; disposed (connections closed) after the test."""
    _needs_sqlalchemy("sqlrs_engine")
    from sqlalchemy import create_engine

    engine = create_engine(sqlrs_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqlrs_session(sqlrs_engine: Engine) -> Iterator[Session]:
    """A SQLAlchemy ORM Session on the test's own database (`sqlrs_engine`), closed after the test.
    Commit freely: the database is this test's alone and goes away with it."""
    from sqlalchemy.orm import Session

    with Session(sqlrs_engine) as session:
        yield session


@pytest.fixture
def sqlrs_async_engine(sqlrs_instance: Instance, pytestconfig: pytest.Config) -> Iterator[AsyncEngine]:
    """A SQLAlchemy AsyncEngine on the test's own database (driver: `sqlrs_async_driver`).

    A plain fixture, so any async test runner works (anyio's pytest plugin, pytest-asyncio). It
    pools nothing (NullPool): each connection closes when the test's code releases it, on the
    test's own event loop, and nothing is left for a loop that has ended."""
    _needs_sqlalchemy("sqlrs_async_engine")
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    driver = str(pytestconfig.getini("sqlrs_async_driver")).strip() or "psycopg"
    engine = create_async_engine(sqlrs_instance.url(driver=driver), poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.sync_engine.dispose()


# -- checks ------------------------------------------------------------------------------------------
def assert_downgrades_restore(client: Client, alembic: str | os.PathLike[str] = "alembic.ini", *,
                              to: str | None = None, data: str = "rows") -> DowngradeReport:
    """Fail the calling test unless every Alembic revision's downgrade restores its parent's state
    (`sqlrs check:alembic --downgrades`; `data`: rows, content or none). Alembic runs in the
    directory of its config file (relative paths: the current directory's), with this process's
    Python. Returns the report when everything restores."""
    config = Path(alembic).absolute()
    return _assert_restores(_client_in(client, config.parent).check_downgrades(config, to=to, data=data),
                            "downgrades that do not restore their parent's state")


def assert_backwards_restore(client: Client, django: str | os.PathLike[str] = "manage.py", *,
                             to: str | None = None, data: str = "rows") -> DowngradeReport:
    """Fail the calling test unless unapplying each Django migration restores its parent's state
    (`sqlrs check:django --backwards`; `django`: manage.py or the directory holding it; `to`:
    APP.MIGRATION; `data`: rows, content or none). Django runs in the directory of manage.py with
    this process's Python and settings module (DJANGO_SETTINGS_MODULE, as pytest-django sets it,
    else the one manage.py sets). Returns the report when everything restores."""
    project = Path(django).absolute()
    base = project if project.is_dir() else project.parent
    return _assert_restores(_client_in(client, base).check_backwards(project, to=to, data=data),
                            "migrations that do not restore their parent's state when unapplied")


def _client_in(client: Client, base_dir: Path) -> Client:
    """`client`'s engine, runtime and image, for a project in `base_dir`."""
    from sqlrs.entrypoints.library.client import Client as ClientClass

    return ClientClass(client.state_dir, runtime=client.runtime, image=client.image, base_dir=base_dir)


def _assert_restores(report: DowngradeReport, headline: str) -> DowngradeReport:
    if not report.restores:
        failed = ", ".join(entry[report.noun] for entry in report.failures)
        raise AssertionError(f"{headline}: {failed}\n{report}")
    return report
