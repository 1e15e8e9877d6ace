"""pytest-django's `django_db_setup` from sqlrs: the sqlrs pytest plugin registers this module
when pytest-django is active and the ini option `sqlrs_django = true` (it comes after pytest-django,
so its fixture wins; a `django_db_setup` in a conftest.py still overrides both).

Each pytest process (every xdist worker) points the `default` database at an sqlrs instance of the
state after the project's last migration (sqlrs.entrypoints.django.databases), instead of creating
`test_<NAME>_gwN` and running every migration into it. `--reuse-db` keeps the instances after the
run (named per worker); the next run replaces them with fresh ones. The plugin's options choose
the engine, runtime and instance kind (`--sqlrs-state-dir`, `--sqlrs-runtime`,
`sqlrs_instance_kind`, ...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlrs.entrypoints.django.databases import TestDatabases, kept_name
from sqlrs.entrypoints.pytest.session import SESSION_KEY


def _project(config: pytest.Config) -> Path:
    """The directory of the project's manage.py: where pytest-django found it (it puts that
    directory first on sys.path), else the rootdir."""
    import sys

    for entry in sys.path:
        if entry and (Path(entry) / "manage.py").is_file():
            return Path(entry).resolve()
    return config.rootpath


def _aliases(items: list[pytest.Item]) -> tuple[Any, Any]:
    """The aliases the collected tests use and those to serialize (pytest-django >= 4.8 says)."""
    try:
        from pytest_django.fixtures import _get_databases_for_setup
    except ImportError:  # older pytest-django: every alias, as its own fixture did
        return None, None
    return _get_databases_for_setup(items)


@pytest.fixture(scope="session")
def django_db_setup(request: pytest.FixtureRequest, django_test_environment: None, django_db_blocker: Any,
                    django_db_keepdb: bool) -> Iterator[None]:
    """Test databases from sqlrs (replaces pytest-django's fixture of the same name)."""
    from django.test.utils import setup_databases, teardown_databases

    session = request.config.stash[SESSION_KEY]
    verbosity = request.config.option.verbose
    databases = TestDatabases(session.client, _project(request.config), session.instance_kind,
                              verbosity=verbosity)
    aliases, serialized = _aliases(request.session.items)
    ours = TestDatabases.aliases(aliases)
    others = [alias for alias in (aliases if aliases is not None else _all_aliases()) if alias not in ours]
    worker = session.worker if session.worker != "main" else None
    started = time.perf_counter()
    with django_db_blocker.unblock():
        theirs = setup_databases(verbosity=verbosity, interactive=False, aliases=others, keepdb=django_db_keepdb,
                                 serialized_aliases=serialized) if others else []
        setup = databases.setup(aliases, serialized_aliases=serialized,
                                keep_as=kept_name(databases.project, ours[0], f"pytest-{worker or 'main'}")
                                if django_db_keepdb and ours else None)
    if setup is not None:
        session.prepares.append({"state_id": setup.state.id, "worker": session.worker,
                                 "build_seconds": round(databases.build_seconds, 4), "pool_size": 0,
                                 "pool_fill_seconds": None,
                                 "django_db_setup_seconds": round(time.perf_counter() - started, 4)})
    try:
        yield
    finally:
        with django_db_blocker.unblock():
            try:
                databases.teardown(setup)
            finally:
                if theirs and not django_db_keepdb:
                    teardown_databases(theirs, verbosity=verbosity)


def _all_aliases() -> list[str]:
    from django.db import connections

    return list(connections)
