"""Django test databases from sqlrs.

`manage.py test` (settings: `TEST_RUNNER = "sqlrs.django.DiscoverRunner"`) and pytest-django (the
sqlrs pytest plugin with `sqlrs_django = true`) take their test database, and one per parallel
worker, from sqlrs: instances of the state after the project's last migration, built one cached
state per migration by the project's own Django (`sqlrs prepare:django`), instead of creating a
database and replaying every migration on every run. See docs/python-api.md.

Nothing here imports Django until it is used, so the plugin can load this package early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sqlrs.entrypoints.django.runner import DiscoverRunner

__all__ = ["DiscoverRunner"]


def __getattr__(name: str) -> Any:
    if name == "DiscoverRunner":  # `TEST_RUNNER = "sqlrs.django.DiscoverRunner"` reads it so
        from sqlrs.entrypoints.django.runner import DiscoverRunner

        return DiscoverRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
