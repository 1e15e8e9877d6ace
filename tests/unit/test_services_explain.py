"""`cache explain` on the engine's side (services/states/explain.py), wired on fakes: the reason each
row of a plan is cached or not, from the plan and the job that built the sibling state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from fakes import Fakes, job_context, wired

from sqlrs.domain.model import JobStatus
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.entrypoints.engine.routes.jobs import summarize_request
from sqlrs.services.requests import parse_prepare

Wired = tuple[Services, Fakes]
MAIN = "CREATE TABLE a (id int);\n\\ir inc.sql\n"


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired() as pair:
        yield pair


def body(include: str, variables: list[list[str]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"steps": [{"kind": "command", "source": "-c", "sql": "CREATE TABLE first (id int)"},
                      {"kind": "file", "source": "schema.sql", "files": [
                          {"path": "schema.sql", "content": MAIN, "includes": [{"line": 1, "file": 1}]},
                          {"path": "db/inc.sql", "content": include, "includes": []}]}],
            "options": {"variables": variables or [], "single_transaction": False}, **extra}


def build(services: Services, data: dict[str, Any]) -> None:
    """A prepare job as the engine runs one: its request kept as the route summarizes it."""
    request = parse_prepare({**data, "build_only": True})
    ctx = job_context(services)
    ctx.job.request = summarize_request(data, request)
    services.repo.update_job(ctx.job)
    services.prepare.run(ctx, request)
    services.repo.update_job(attrs.evolve(ctx.job, status=JobStatus.SUCCEEDED))


def explain(services: Services, data: dict[str, Any]) -> list[dict[str, Any]]:
    result = services.prepare.run(job_context(services), parse_prepare({**data, "plan_only": True, "explain": True}))
    rows: list[dict[str, Any]] = result["explain"]
    return rows


def test_nothing_built_yet(engine: Wired) -> None:
    services, _ = engine
    rows = explain(services, body("INSERT INTO a VALUES (1);\n"))
    assert [row["code"] for row in rows] == ["not_built", "parent_not_cached", "parent_not_cached"]
    assert "fake PostgreSQL" in rows[0]["reason"] and "bootstrap superuser postgres" in rows[0]["reason"]


def test_the_changed_include_is_named(engine: Wired) -> None:
    services, _ = engine
    build(services, body("INSERT INTO a VALUES (1);\n"))
    assert [row["code"] for row in explain(services, body("INSERT INTO a VALUES (1);\n"))] == ["cached"] * 3
    rows = explain(services, body("INSERT INTO a VALUES (2);\n"))
    assert [row["code"] for row in rows] == ["cached", "cached", "input_changed"]
    changed = rows[2]
    assert [c["input"] for c in changed["changed"]] == ["db/inc.sql"] and changed["added"] == []
    assert changed["reason"].startswith("db/inc.sql changed since state")
    assert changed["sibling"]["source"] == "schema.sql"
    assert [i["input"] for i in changed["inputs"]] == ["schema.sql", "db/inc.sql"]


def test_other_options_and_another_superuser(engine: Wired) -> None:
    services, _ = engine
    build(services, body("SELECT 1;\n"))
    rows = explain(services, body("SELECT 1;\n", variables=[["env", "ci"]]))
    assert rows[1]["code"] == "options_changed" and "env=ci" in rows[1]["reason"]
    other = explain(services, body("SELECT 1;\n", superuser="sqlrs"))
    assert other[0]["code"] == "runtime_changed" and "bootstrap superuser sqlrs" in other[0]["reason"]
    assert other[0]["cached_bases"] and not other[0]["cached"]
