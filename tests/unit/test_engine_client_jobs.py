"""The prepare protocol of sqlrs.engine_client.jobs, which the CLI and the library both use:
digests first, the scripts only on `content_required`, following a job to its result or error.
The engine is a scripted stand-in here (tests/integration run the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlrs.domain.scripts import content_digest
from sqlrs.engine_client import jobs
from sqlrs.engine_client.errors import EXIT_USAGE, ClientError
from sqlrs.engine_client.psqlargs import Workspace, parse_prepare_args


class Answer:
    """An HTTP answer as EngineClient.request returns it."""

    def __init__(self, status: int, items: list[dict[str, Any]]):
        self.status = status
        self._items = iter(items)

    def json(self) -> Any:
        return next(self._items)

    def lines(self) -> Iterator[dict[str, Any]]:
        return self._items

    def close(self) -> None:
        pass


CONTENT_REQUIRED = {"code": "content_required", "message": "step 1 must be built", "details": {}}


class Engine:
    """Answers job submissions: `content_required` for digests when `cached` is false."""

    def __init__(self, cached: bool, events: list[dict[str, Any]]):
        self.cached = cached
        self.events = events
        self.posted: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Answer:
        if method == "POST" and path.startswith(jobs.JOBS):
            self.posted.append(json.loads(json.dumps(body)))
            if not self.cached and any("files" not in s and "sql" not in s for s in body["steps"]):
                return Answer(409, [CONTENT_REQUIRED])
            return Answer(201, [{"job_id": f"job{len(self.posted)}"}, *self.events])
        if method == "GET" and "/events" in path:
            return Answer(200, list(self.events))
        raise AssertionError(f"unexpected {method} {path}")

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        answer = self.request(method, path, body, **kwargs)
        data = answer.json()
        if answer.status >= 400:
            raise ClientError.from_engine(data, answer.status)
        return data


def succeeded(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"seq": 1, "type": "result", "data": result}, {"seq": 2, "type": "status", "data": {"status": "succeeded"}}]


def chain(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "a.sql").write_text("CREATE TABLE a (x int);\n\\ir b.sql\n")
    (tmp_path / "b.sql").write_text("INSERT INTO a VALUES (1);\n")
    parsed = parse_prepare_args(["-f", "a.sql", "-c", "select 1"], Workspace(cwd=tmp_path, root=tmp_path))
    return jobs.job_body(jobs.psql_chain(parsed), runtime="native", name="dev")


def test_a_cached_chain_travels_as_digests_only(tmp_path: Path) -> None:
    body = chain(tmp_path)
    engine = Engine(cached=True, events=succeeded({"dsn": "postgresql://x"}))
    result = jobs.prepare(engine, body, jobs.NoProgress)  # type: ignore[arg-type]
    assert result == {"dsn": "postgresql://x", "job_id": "job1"}  # the job that answered, for provenance
    (posted,) = engine.posted
    assert [set(step) for step in posted["steps"]] == [{"kind", "source", "digest"}] * 2
    # the file step's digest is its content with the include inlined (one file of that content
    # has the same), the command's its SQL
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.sql").write_text("CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n")
    inlined = parse_prepare_args(["-f", "a.sql"], Workspace(cwd=tmp_path / "one", root=tmp_path))
    assert posted["steps"][0]["digest"] == jobs.lean(jobs.psql_chain(inlined))["steps"][0]["digest"]
    assert posted["steps"][0]["digest"] != content_digest((tmp_path / "a.sql").read_text())
    assert posted["steps"][1]["digest"] == content_digest("select 1")
    assert {k: v for k, v in posted.items() if k != "steps"} == {k: v for k, v in body.items() if k != "steps"}


def test_the_scripts_follow_when_the_engine_must_build(tmp_path: Path) -> None:
    body = chain(tmp_path)
    engine = Engine(cached=False, events=succeeded({"state_id": "s"}))
    assert jobs.prepare(engine, body, jobs.NoProgress)["state_id"] == "s"  # type: ignore[arg-type]
    lean, full = engine.posted
    assert "files" not in lean["steps"][0] and full == body


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    class Refusing(Engine):
        def request(self, method: str, path: str, body: Any = None, **_: Any) -> Answer:
            self.posted.append(body)
            return Answer(400, [{"code": "invalid_argument", "message": "bad image", "details": {"hint": "h"}}])

    engine = Refusing(cached=True, events=[])
    with pytest.raises(ClientError) as raised:
        jobs.submit(engine, chain(tmp_path), watch=True)  # type: ignore[arg-type]
    assert (raised.value.exit_code, raised.value.message, raised.value.hint) == (EXIT_USAGE, "bad image", "h")
    assert len(engine.posted) == 1


def test_a_failed_job_raises_its_error(tmp_path: Path) -> None:
    events = [{"seq": 1, "type": "error", "data": {"code": "step_failed", "message": "a.sql:1: boom"}},
              {"seq": 2, "type": "status", "data": {"status": "failed"}}]
    with pytest.raises(ClientError) as raised:
        jobs.prepare(Engine(cached=True, events=events), chain(tmp_path), jobs.NoProgress)  # type: ignore[arg-type]
    assert (raised.value.code, raised.value.exit_code, raised.value.message) == ("step_failed", 1, "a.sql:1: boom")


def test_name_policy() -> None:
    assert [jobs.name_policy("n", r, f) for r, f in ((False, False), (True, False), (False, True))] == \
        ["error", "reuse", "fresh"]
    for name, reuse, fresh in (("n", True, True), (None, True, False), (None, False, True)):
        with pytest.raises(ClientError) as raised:
            jobs.name_policy(name, reuse, fresh)
        assert raised.value.exit_code == EXIT_USAGE
