"""`prepare:<kind> --from STATE` for every input kind (SPEC: start from an existing state instead
of the base), on the native runtime: the chain is keyed on STATE, the plan's first row is STATE
(kind `state`), and each kind's tool runs against a copy of STATE's data."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, ok, psql, write

pytestmark = pytest.mark.timeout(900)

ONE_CHANGESET = """<?xml version="1.0" encoding="UTF-8"?>
<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://www.liquibase.org/xml/ns/dbchangelog
        http://www.liquibase.org/xml/ns/dbchangelog/dbchangelog-4.20.xsd">
    <changeSet id="guestbook" author="tester">
        <sql>CREATE TABLE guestbook AS SELECT id, 'hello' AS note FROM visitor</sql>
    </changeSet>
</databaseChangeLog>
"""
AUDIT = ("sh", "-c", "psql -X -v ON_ERROR_STOP=1 -c 'CREATE TABLE audit AS SELECT count(*) AS n FROM visitor'")


def rows(sq: Sqlrs, *args: str, cwd: Path) -> list[dict]:
    plan: list[dict] = json.loads(ok(sq.run(*args, cwd=cwd)))
    return plan


def test_every_input_kind_builds_on_a_state(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    sq.prepare("-c", "CREATE TABLE visitor AS SELECT 7 AS id")
    start = sq.plan("-c", "CREATE TABLE visitor AS SELECT 7 AS id")[-1]["state_id"]

    # exec: the command sees the state's tables
    exec_plan = rows(sq, "plan:exec", "--runtime", "native", "--from", start[:12], "-o", "json", "--", *AUDIT,
                     cwd=workspace)
    assert [(row["kind"], row["state_id"]) for row in exec_plan[:1]] == [("state", start)]
    assert [row["kind"] for row in exec_plan] == ["state", "exec"] and not exec_plan[1]["cached"]
    dsn = ok(sq.run("prepare:exec", "--runtime", "native", "--from", start, "--", *AUDIT, cwd=workspace)).strip()
    assert psql(dsn, "SELECT n FROM audit") == "1"
    assert rows(sq, "plan:exec", "--runtime", "native", "--from", start, "-o", "json", "--", *AUDIT,
                cwd=workspace)[1]["cached"]
    # the same chain on the base is another state: the key starts from STATE
    assert rows(sq, "plan:exec", "--runtime", "native", "-o", "json", "--", *AUDIT,
                cwd=workspace)[1]["state_id"] != exec_plan[1]["state_id"]

    # Liquibase: the changeset runs on the state's data
    write(workspace / "db" / "guestbook.xml", ONE_CHANGESET)
    lb = ("--", "update", "--changelog-file=guestbook.xml", "--search-path=db")
    plan = rows(sq, "plan:lb", "--runtime", "native", "--from", start, "-o", "json", *lb, cwd=workspace)
    assert [row["kind"] for row in plan] == ["state", "liquibase"] and plan[0]["state_id"] == start
    dsn = ok(sq.run("prepare:lb", "--runtime", "native", "--from", start, *lb, cwd=workspace, timeout=900)).strip()
    assert psql(dsn, "SELECT id || ' ' || note FROM guestbook") == "7 hello"
    assert psql(dsn, "SELECT id FROM databasechangelog") == "guestbook"

    # Alembic: revisions the state already has are no-ops to `alembic upgrade`
    shop = workspace / "shop"
    shutil.copytree(REPO / "examples" / "alembic-shop", shop, ignore=shutil.ignore_patterns("__pycache__"))
    to_two = rows(sq, "plan:alembic", "--runtime", "native", "--from", start, "--to", "0002", "-o", "json", cwd=shop)
    assert [row["kind"] for row in to_two] == ["state", "alembic", "alembic"]
    at_two = ok(sq.run("prepare:alembic", "--runtime", "native", "--from", start, "--to", "0002", cwd=shop)).strip()
    assert psql(at_two, "SELECT version_num || ' ' || (SELECT count(*) FROM visitor) FROM alembic_version") == "0002 1"
    two = to_two[-1]["state_id"]
    dsn = ok(sq.run("prepare:alembic", "--runtime", "native", "--from", two, "--to", "0003", cwd=shop)).strip()
    assert psql(dsn, "SELECT version_num FROM alembic_version") == "0003"
    assert psql(dsn, "SELECT to_regclass('orders') IS NOT NULL AND to_regclass('visitor') IS NOT NULL") == "t"

    # the library reads the same chains
    import sqlrs

    client = sqlrs.Client(sq.state_dir, runtime="native", base_dir=workspace)
    assert client.plan(exec=list(AUDIT), from_state=start)[1]["state_id"] == exec_plan[1]["state_id"]
    for instance in sq.instances():
        ok(sq.run("rm", "--force", instance["id"]))


def test_from_an_unknown_state_is_refused(sqlrs_native: Sqlrs, workspace: Path) -> None:
    result = sqlrs_native.run("prepare:exec", "--runtime", "native", "--from", "f" * 12, "--", sys.executable,
                              "-c", "pass", cwd=workspace)
    assert result.returncode == 4 and "no state matches --from" in result.stderr and "Traceback" not in result.stderr
