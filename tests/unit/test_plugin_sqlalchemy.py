"""The plugin's SQLAlchemy side: `Instance.url()`, and SQLAlchemy imported only by the fixtures
that need it (the engine-backed fixtures themselves run in tests/integration and the example)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlrs.entrypoints.library.client_types import Instance


def instance(**changes: object) -> Instance:
    fields: dict = {"id": "i1", "state_id": "s1", "dsn": "postgresql://sqlrs:pw@127.0.0.1:5433/postgres",
                    "host": "127.0.0.1", "port": 5433, "user": "sqlrs", "password": "pw", "dbname": "postgres",
                    "runtime": "native"}
    return Instance(**{**fields, **changes})


def test_url_names_the_driver() -> None:
    assert instance().url() == "postgresql+psycopg://sqlrs:pw@127.0.0.1:5433/postgres"
    assert instance().url(driver="asyncpg") == "postgresql+asyncpg://sqlrs:pw@127.0.0.1:5433/postgres"
    assert instance().url(driver=None) == instance().dsn
    # a database instance's database name, and characters a URL must escape
    odd = instance(password="p@ss/w:rd%", dbname="sqlrs_ab12")
    assert odd.url() == "postgresql+psycopg://sqlrs:p%40ss%2Fw%3Ard%25@127.0.0.1:5433/sqlrs_ab12"
    from sqlalchemy.engine import make_url

    parsed = make_url(odd.url())
    assert (parsed.password, parsed.database, parsed.drivername) == ("p@ss/w:rd%", "sqlrs_ab12", "postgresql+psycopg")


def test_sqlalchemy_stays_out_until_a_fixture_wants_it(tmp_path: Path) -> None:
    # the plugin is loaded (entry point) in a run whose tests use none of its SQLAlchemy fixtures
    (tmp_path / "test_x.py").write_text(
        "import sys\n\n"
        "def test_nothing_imported_sqlalchemy(request):\n"
        "    assert request.config.pluginmanager.has_plugin('sqlrs')\n"
        "    assert not [m for m in sys.modules if m.split('.')[0] == 'sqlalchemy']\n"
        "    import sqlrs.entrypoints.library.client, sqlrs.entrypoints.pytest.session  # the library too\n"
        "    assert not [m for m in sys.modules if m.split('.')[0] == 'sqlalchemy']\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(tmp_path / "test_x.py")], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
