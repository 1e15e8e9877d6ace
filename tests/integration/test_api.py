"""The engine's HTTP API against its committed OpenAPI document, on a live engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from harness import Sqlrs

from sqlrs.entrypoints.engine import openapi

DOCUMENT_PATH = Path(openapi.__file__).with_name("openapi.json")


def test_committed_document_is_current() -> None:
    assert json.loads(DOCUMENT_PATH.read_text()) == json.loads(json.dumps(openapi.document())), (
        "refresh it: python -m sqlrs.entrypoints.engine.openapi > sqlrs/entrypoints/engine/openapi.json")


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    from sqlrs.entrypoints.engine.routes import ROUTES  # the table create_app builds the app from

    routes = {(route.path, method.lower()) for route in ROUTES for method in route.methods or ()
              if method != "HEAD"}  # Starlette answers HEAD wherever GET is routed
    documented = {(path, method) for path, ops in openapi.document()["paths"].items() for method in ops}
    assert routes == documented


def _validator(name: str) -> jsonschema.Draft202012Validator:
    document = json.loads(DOCUMENT_PATH.read_text())
    return jsonschema.Draft202012Validator({**document, "$ref": f"#/components/schemas/{name}"})


def curl(info: dict[str, Any], method: str, path: str, body: str | None = None,
         token: str | None = "default") -> tuple[int, Any]:
    args = ["curl", "-s", "-X", method, "--unix-socket", info["socket"], "-w", "\n%{http_code}"]
    if token:
        args += ["-H", f"Authorization: Bearer {info['token'] if token == 'default' else token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    out = subprocess.run([*args, f"http://engine{path}"], capture_output=True, text=True, timeout=120).stdout
    text, _, status = out.rpartition("\n")
    try:
        return int(status), json.loads(text) if text else None
    except ValueError:
        return int(status), text


@pytest.fixture
def engine(sqlrs_native: Sqlrs, workspace: Path) -> dict[str, Any]:
    (workspace / "a.sql").write_text("CREATE TABLE a (x int);\n")
    sqlrs_native.prepare("-f", "a.sql", name="api", cwd=workspace)
    info: dict[str, Any] = json.loads((sqlrs_native.state_dir / "engine.json").read_text())
    return info


def test_answers_match_the_document(engine: dict[str, Any]) -> None:
    checks = [("/v1/health", "Health"), ("/v1/status", "Status"), ("/v1/config", "Config")]
    for path, schema in checks:
        status, body = curl(engine, "GET", path)
        assert status == 200
        _validator(schema).validate(body)
    for path, schema in [("/v1/states", "State"), ("/v1/instances", "Instance"), ("/v1/names", "Name"),
                         ("/v1/prepare-jobs", "Job")]:
        status, body = curl(engine, "GET", path)
        assert status == 200 and body
        for item in body:
            _validator(schema).validate(item)
    status, body = curl(engine, "GET", "/v1/instances/api")
    assert status == 307
    status, body = curl(engine, "GET", "/v1/states/zz")
    assert status == 400
    _validator("Error").validate(body)


def test_sessions_match_the_document(engine: dict[str, Any]) -> None:
    status, states = curl(engine, "GET", "/v1/states")
    state_id = next(s["id"] for s in states if s["parent_id"] is not None)
    status, body = curl(engine, "PUT", "/v1/sessions/suite-gw0", json.dumps({"state_id": state_id[:12]}))
    assert status == 200, body
    _validator("Session").validate(body)
    assert body["session"] == "suite-gw0" and body["state_id"] == state_id
    status, body = curl(engine, "GET", "/v1/sessions")
    assert status == 200 and body == [{"session": "suite-gw0", "state_ids": [state_id]}]
    _validator("SessionListed").validate(body[0])
    status, body = curl(engine, "GET", "/v1/status")
    assert body["demand"]["sessions"] == 1 and body["demand"]["busy"] == [state_id]
    status, body = curl(engine, "DELETE", "/v1/sessions/suite-gw0")
    assert status == 200 and body == {"session": "suite-gw0", "ended": True, "state_ids": [state_id]}
    _validator("SessionEnd").validate(body)
    status, body = curl(engine, "DELETE", "/v1/sessions/suite-gw0")
    assert status == 200 and body["ended"] is False  # idempotent
    status, body = curl(engine, "PUT", "/v1/sessions/s", json.dumps({"state_id": "ffff"}))
    assert status == 404
    status, body = curl(engine, "PUT", "/v1/sessions/s", json.dumps({"state": state_id}))
    assert status == 400
    _validator("Error").validate(body)


@pytest.mark.parametrize("body", ["{", "[]", '{"steps": "x"}', '{"steps": [], "bogus": 1}',
                                  '{"steps": [{"kind": "file", "source": "a"}]}', '"just a string"',
                                  '{"steps": [{"kind": "command", "source": "-c", "sql": "select 1"}], '
                                  '"name": "../../etc"}'])
def test_malformed_requests_get_json_4xx(engine: dict[str, Any], body: str) -> None:
    status, answer = curl(engine, "POST", "/v1/prepare-jobs", body)
    assert 400 <= status < 500, (status, answer)
    _validator("Error").validate(answer)


def test_unauthorized_and_unknown(engine: dict[str, Any]) -> None:
    status, body = curl(engine, "GET", "/v1/instances", token=None)
    assert status == 401
    _validator("Error").validate(body)
    status, body = curl(engine, "GET", "/v1/nowhere")
    assert status == 404
    _validator("Error").validate(body)
    status, body = curl(engine, "PUT", "/v1/states")
    assert status == 405
    _validator("Error").validate(body)


def test_a_taken_name_is_refused_alike_by_prepare_jobs_and_instances(engine: dict[str, Any]) -> None:
    status, listed = curl(engine, "GET", "/v1/instances")
    named = next(item for item in listed if item["name"] == "api")
    answers = [
        curl(engine, "POST", "/v1/instances", json.dumps({"state_id": named["state_id"], "name": "api"})),
        curl(engine, "POST", "/v1/prepare-jobs", json.dumps({
            "steps": [{"kind": "command", "source": "-c", "sql": "select 1"}], "name": "api"})),
    ]
    for status, body in answers:
        assert status == 409, body
        _validator("Error").validate(body)
        assert body["code"] == "conflict"
        assert body["message"] == f"name 'api' is bound to instance {named['id']}"
        assert "--reuse" in body["details"]["hint"]
    status, listed = curl(engine, "GET", "/v1/instances")
    assert [item["id"] for item in listed] == [named["id"]]  # nothing was started for either


def test_a_config_change_that_waits_for_a_restart_says_so_in_a_header(engine: dict[str, Any]) -> None:
    def patch(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        out = subprocess.run(["curl", "-s", "-i", "-X", "PATCH", "--unix-socket", engine["socket"],
                              "-H", f"Authorization: Bearer {engine['token']}", "-H", "Content-Type: application/json",
                              "--data-binary", json.dumps(body), "http://engine/v1/config"],
                             capture_output=True, timeout=60).stdout.decode()  # bytes: keep the CRLFs
        head, _, text = out.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200"), out
        return head.lower(), json.loads(text)

    head, effective = patch({"engine.idle_timeout": 900, "jobs.history.max": 150})
    assert "\r\nx-sqlrs-restart-needed: engine.idle_timeout\r\n" in head + "\r\n"
    assert effective["jobs.history.max"] == {"value": 150, "source": "config"}
    head, _ = patch({"jobs.history.max": None})
    assert "x-sqlrs-restart-needed" not in head
