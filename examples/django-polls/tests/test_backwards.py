"""Unapplying each migration (`migrate APP PREVIOUS`) restores the database it started from (schema
and row counts), checked on the cached state of each migration: no replay of the history per
migration. A pytest check (`sqlrs check:django --backwards` in a test); `manage.py test` runs the
apps' Django TestCases only."""

from __future__ import annotations

from pathlib import Path

import sqlrs
from sqlrs.pytest_plugin import assert_backwards_restore

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"


def test_every_migration_unapplies_to_its_parent_state(sqlrs_client: sqlrs.Client) -> None:
    report = assert_backwards_restore(sqlrs_client, MANAGE)
    unapplied = [migration["migration"] for migration in report.migrations]
    assert "polls.0003_seed_and_backfill_slugs" in unapplied and "tags.0002_seed_tags" in unapplied
