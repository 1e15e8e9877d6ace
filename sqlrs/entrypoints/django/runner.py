"""`manage.py test` with sqlrs test databases: `TEST_RUNNER = "sqlrs.django.DiscoverRunner"`.

Django's own DiscoverRunner, except where the test databases come from: the `default` database
(and each `--parallel` worker's) is an sqlrs instance of the state after the project's last
migration (databases.py), built once per migration and cached, instead of a database created and
migrated on every run and copied per worker. `--keepdb` keeps the instances after the run (named,
see `sqlrs ls`); the next run replaces them with fresh ones. Other aliases are left to Django.

Options (beside Django's): `--sqlrs-kind auto|server|database` (what each test database is: a
server of its own, or a database in the state's shared server; auto: database on the copy store),
`--sqlrs-runtime`, `--sqlrs-image`. The engine is found as the CLI finds it (SQLRS_STATE_DIR).
"""

from __future__ import annotations

import argparse
from typing import Any

from django.db import connections
from django.test import runner as django_runner

from sqlrs.entrypoints.django.databases import CLONES_KEY, Setup, TestDatabases, kept_name, project_dir


def _init_worker(counter: Any, *args: Any) -> None:
    """A parallel worker's start: Django's (which names the worker), then the worker's own
    sqlrs instance for every connection that has clones."""
    django_runner._init_worker(counter, *args)
    worker = str(django_runner._worker_id)
    for alias in connections:
        connection = connections[alias]
        clone = (connection.settings_dict.get(CLONES_KEY) or {}).get(worker)
        if clone is not None:
            connection.close()
            connection.settings_dict.update(clone)


class ParallelTestSuite(django_runner.ParallelTestSuite):
    init_worker = _init_worker


class DiscoverRunner(django_runner.DiscoverRunner):
    """Django's test runner with test databases from sqlrs (see the module's docstring)."""

    parallel_test_suite = ParallelTestSuite

    def __init__(self, *args: Any, sqlrs_kind: str = "auto", sqlrs_runtime: str | None = None,
                 sqlrs_image: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sqlrs_kind = sqlrs_kind
        self.sqlrs_runtime = sqlrs_runtime
        self.sqlrs_image = sqlrs_image
        self._databases: TestDatabases | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        group = parser.add_argument_group("sqlrs")
        group.add_argument("--sqlrs-kind", dest="sqlrs_kind", choices=["auto", "server", "database"],
                           default="auto", help="server: each test database is a PostgreSQL server of its own; "
                           "database: a database in the state's shared server; auto (default): database on the "
                           "copy store, else server.")
        group.add_argument("--sqlrs-runtime", dest="sqlrs_runtime", choices=["auto", "docker", "podman", "native"],
                           help="Where PostgreSQL runs (default: the engine's configuration).")
        group.add_argument("--sqlrs-image", dest="sqlrs_image", help="Container image (docker/podman).")

    @property
    def databases(self) -> TestDatabases:
        if self._databases is None:
            from sqlrs.entrypoints.library.client import Client

            self._databases = TestDatabases(Client(runtime=self.sqlrs_runtime, image=self.sqlrs_image),
                                            project_dir(), self.sqlrs_kind, verbosity=self.verbosity)
        return self._databases

    def setup_databases(self, **kwargs: Any) -> Any:
        aliases = kwargs.get("aliases")
        ours = TestDatabases.aliases(aliases)
        others = [alias for alias in (connections if aliases is None else aliases) if alias not in ours]
        theirs = super().setup_databases(**{**kwargs, "aliases": others}) if others else []
        try:
            keep_as = kept_name(self.databases.project, ours[0]) if self.keepdb and ours else None
            clones = self.parallel if self.parallel > 1 else 0
            setup = self.databases.setup(aliases, clones=clones, serialized_aliases=kwargs.get("serialized_aliases"),
                                         keep_as=keep_as)
        except BaseException:
            super().teardown_databases(theirs)
            raise
        return setup, theirs

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        setup, theirs = old_config
        try:
            self.databases.teardown(setup if isinstance(setup, Setup) else None)
        finally:
            if theirs:
                super().teardown_databases(theirs, **kwargs)
