"""Every revision's downgrade restores the database its upgrade started from (schema and row
counts), checked on the cached state of each revision: no replay of the history per revision."""

from __future__ import annotations

from pathlib import Path

import sqlrs
from sqlrs.pytest_plugin import assert_downgrades_restore

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def test_every_downgrade_restores_its_parent(sqlrs_client: sqlrs.Client) -> None:
    report = assert_downgrades_restore(sqlrs_client, ALEMBIC_INI)
    assert [revision["revision"] for revision in report.revisions][:4] == ["0001", "0002", "0003", "0004"]
