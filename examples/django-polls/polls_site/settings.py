"""Settings of the polls example: a PostgreSQL project as developers usually configure one.

The database comes from libpq's variables (PGHOST, PGPORT, ...), defaulting to a local server.
sqlrs never edits this file: `sqlrs prepare:django` and the test runner point Django at their own
servers when they run it.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-polls-example-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "polls",
    "accounts",
    "tags",
]

ROOT_URLCONF = "polls_site.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "polls"),
        "USER": os.environ.get("PGUSER", "polls"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "localhost"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# `manage.py test` takes its test database (and one per --parallel worker) from sqlrs
TEST_RUNNER = "sqlrs.django.DiscoverRunner"
