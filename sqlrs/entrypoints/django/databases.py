"""The test databases of the Django project set up in this process, from sqlrs.

Shared by the `manage.py test` runner (runner.py) and pytest-django's `django_db_setup`
(pytest_fixtures.py). Django would create `test_<NAME>`, run every migration into it, and copy
it once per parallel worker (`CREATE DATABASE ... TEMPLATE`). Here the state after the last
migration is built (or found cached) once per migration by sqlrs, and the test database and each
worker's are sqlrs instances of it: the `default` connection (and the aliases that mirror it)
is pointed at them, and pointed back afterwards. Other aliases are left to Django.

With `keep_as` (Django's --keepdb, pytest-django's --reuse-db) the instances are named and
outlive the run (to look into them: `sqlrs ls`); the next run replaces them with fresh ones of
the current state. Django keeps a test database to save creating and migrating it, which sqlrs
does not spend anyway; what Django's reuse costs (the rows a TransactionTestCase flushed, data
migrations' rows with them; a database that missed a changed migration) does not carry over.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.entrypoints.library.client import Client, Instance, State

# where the parallel workers find their clone's connection, by worker number ("1", "2", ...);
# it travels in the connection's settings, which Django hands to spawned workers as well
CLONES_KEY = "SQLRS_CLONES"
CONNECTION_KEYS = ("NAME", "USER", "PASSWORD", "HOST", "PORT")
DATABASE_CACHE = "django.core.cache.backends.db.DatabaseCache"


def instance_kind(client: Client, wanted: str) -> str:
    """`auto`: database instances on the copy store (a server instance copies the whole data
    directory there), server instances on copy-on-write stores (as fast, and more isolated)."""
    if wanted != "auto":
        return wanted
    return "database" if client.status().get("snapshot", {}).get("backend") == "copy" else "server"


def project_dir() -> Path:
    """Where the project's manage.py is: the running manage.py's directory, else the cwd."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "manage.py" and script.is_file():
        return script.resolve().parent
    return Path.cwd()


def kept_name(project: Path, alias: str, worker: str | None = None) -> str:
    """The name a kept test database goes by: one per project checkout, settings, alias and worker."""
    from django.conf import settings

    tag = hashlib.sha256(f"{project}\0{settings.SETTINGS_MODULE}".encode()).hexdigest()[:10]
    return f"django-test-{tag}-{alias}" + (f"-{worker}" if worker else "")


def connection_values(instance: Instance) -> dict[str, Any]:
    return {"NAME": instance.dbname, "USER": instance.user, "PASSWORD": instance.password, "HOST": instance.host,
            "PORT": str(instance.port)}


@dataclass
class Setup:
    """What `TestDatabases.setup` did, for `teardown`."""

    state: State
    instances: list[Instance]  # the test database first, then one per parallel worker
    keep: bool
    restore: dict[str, dict[str, Any]] = field(default_factory=dict)  # alias -> its connection before


class TestDatabases:
    """Test databases from sqlrs for the Django project set up in this process."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, client: Client, project: Path, kind: str = "auto",
                 log: Callable[[str], None] | None = None, verbosity: int = 1):
        self.client = client
        self.project = project
        self.wanted_kind = kind
        # on stderr, where Django says "Creating test database for alias ..."
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.verbosity = verbosity
        self._state: State | None = None
        self.build_seconds = 0.0
        self.built = 0  # migrations not cached when this process asked (0: every state was cached)
        self.migrations = 0

    def state(self) -> State:
        """The state after the project's last migration, built or found cached (once per object)."""
        if self._state is None:
            started = time.perf_counter()

            def on_event(event: dict[str, Any]) -> None:
                if event.get("type") == "plan":  # the chain's rows: the base, then one per migration
                    rows = (event.get("data") or {}).get("steps") or []
                    self.migrations = sum(1 for row in rows if row.get("kind") == "django")
                    self.built = sum(1 for row in rows if row.get("kind") == "django" and not row.get("cached"))

            self._state = self.client.build(django=self.project, on_event=on_event)
            self.build_seconds = time.perf_counter() - started
        return self._state

    def setup(self, aliases: Iterable[str] | None, *, clones: int = 0,
              serialized_aliases: Iterable[str] | None = None, keep_as: str | None = None) -> Setup | None:
        """Point `default` (when `aliases` has it; None: every alias) and its mirrors at a fresh
        instance, and leave `clones` more for parallel workers; None when `default` is not needed.
        `keep_as`: name the instances so and keep them after the run (replacing those of the last run)."""
        from django.db import DEFAULT_DB_ALIAS, connections

        ours = self.aliases(aliases)
        if not ours:
            return None
        connection = connections[DEFAULT_DB_ALIAS]
        if connection.vendor != "postgresql":
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"sqlrs gives PostgreSQL test databases, but DATABASES['default'] uses "
                                       f"{connection.settings_dict.get('ENGINE')}")
        started = time.perf_counter()
        state = self.state()
        kind = instance_kind(self.client, self.wanted_kind)
        names: list[str | None] = [None] * (clones + 1)
        if keep_as is not None:
            names = [keep_as, *(f"{keep_as}-{number}" for number in range(1, clones + 1))]
        setup = Setup(state, self._acquire(state, kind, names), keep=keep_as is not None)
        try:
            main, workers = setup.instances[0], setup.instances[1:]
            for alias in ours:
                setup.restore[alias] = self._point(alias, connection_values(main))
                if workers:
                    connections[alias].settings_dict[CLONES_KEY] = {
                        str(number): connection_values(instance) for number, instance in enumerate(workers, 1)}
            self._create_cache_tables(setup.instances)
            if serialized_aliases is None or DEFAULT_DB_ALIAS in set(serialized_aliases):
                # for TransactionTestCase.serialized_rollback, as Django's setup_databases does
                connection._test_serialized_contents = connection.creation.serialize_db_to_string()
        except BaseException:
            self.teardown(setup)
            raise
        if self.verbosity >= 1:
            built = f", {self.built} built now" if self.built else ", all cached"
            more = f" and {clones} for parallel workers" if clones else ""
            self.log(f"Using sqlrs for the test database of alias 'default'{more}: state {state.id[:12]} "
                     f"({self.migrations} migrations{built}), {kind} instance(s), ready in "
                     f"{time.perf_counter() - started:.2f} s")
        return setup

    @staticmethod
    def aliases(aliases: Iterable[str] | None) -> list[str]:
        """`default` (when wanted) and the aliases that mirror it in tests."""
        from django.db import DEFAULT_DB_ALIAS, connections

        wanted = set(connections) if aliases is None else set(aliases)
        if DEFAULT_DB_ALIAS not in wanted:
            return []
        mirrors = [alias for alias in connections
                   if (connections[alias].settings_dict.get("TEST") or {}).get("MIRROR") == DEFAULT_DB_ALIAS]
        return [DEFAULT_DB_ALIAS, *mirrors]

    def teardown(self, setup: Setup | None) -> None:
        """Point the connections back; remove the instances unless they are kept."""
        from django.conf import settings
        from django.db import connections

        if setup is None:
            return
        for alias, before in setup.restore.items():
            connection = connections[alias]
            connection.close()
            connection.settings_dict.pop(CLONES_KEY, None)
            connection.settings_dict.update(before)
            if settings.DATABASES.get(alias) is not connection.settings_dict:
                settings.DATABASES[alias].update(before)
        setup.restore.clear()
        if not setup.keep and setup.instances:
            with ThreadPoolExecutor(max_workers=len(setup.instances)) as pool:
                list(pool.map(self.client.remove, setup.instances))
            setup.instances = []

    # -- helpers ----------------------------------------------------------------------------------
    def _acquire(self, state: State, kind: str, names: list[str | None]) -> list[Instance]:
        """One instance per name, concurrently; all or none (a failure removes the ones made)."""
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [pool.submit(self._instance, state, kind, name) for name in names]
        made = [future.result() for future in futures if future.exception() is None]
        failed = [future.exception() for future in futures if future.exception() is not None]
        if failed:
            for instance in made:
                if instance.name is None:
                    self.client.remove(instance)
            raise failed[0]  # type: ignore[misc]
        return made

    def _instance(self, state: State, kind: str, name: str | None) -> Instance:
        if name is None:
            return self.client.create_instance(state, kind=kind)  # owned: gone with this process
        from sqlrs.entrypoints.library.client import NotFoundError

        try:
            self.client.remove(self.client.get_instance(name))  # what the last run left in it goes
        except NotFoundError:
            pass
        return self.client.create_instance(state, kind=kind, name=name, owned=False)

    @staticmethod
    def _point(alias: str, values: dict[str, Any]) -> dict[str, Any]:
        """Point `alias` at another database; what it pointed at before."""
        from django.conf import settings
        from django.db import connections

        connection = connections[alias]
        connection.close()
        before = {key: connection.settings_dict.get(key) for key in CONNECTION_KEYS}
        connection.settings_dict.update(values)
        if settings.DATABASES.get(alias) is not connection.settings_dict:
            settings.DATABASES[alias].update(values)
        return before

    def _create_cache_tables(self, instances: list[Instance]) -> None:
        """`createcachetable` in every instance, as Django does in its test database, when a cache
        lives in the database (new instances of the state do not have the table)."""
        from django.conf import settings
        from django.core.management import call_command
        from django.db import DEFAULT_DB_ALIAS, connections

        if not any(cache.get("BACKEND") == DATABASE_CACHE for cache in settings.CACHES.values()):
            return
        connection = connections[DEFAULT_DB_ALIAS]
        main = {key: connection.settings_dict.get(key) for key in CONNECTION_KEYS}
        try:
            for instance in instances:
                self._point(DEFAULT_DB_ALIAS, connection_values(instance))
                call_command("createcachetable", database=DEFAULT_DB_ALIAS)
        finally:
            self._point(DEFAULT_DB_ALIAS, main)
