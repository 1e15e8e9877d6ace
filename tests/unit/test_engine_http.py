"""The engine's HTTP layer in-process, without an engine: the guard, the one error shaper, and the
exit-code table the CLI reads the engine's errors with. Drives the ASGI app directly (the
services are a stub: these paths fail before reaching a service, or on purpose in one)."""

from __future__ import annotations

import asyncio
import json
import types
from typing import Any

import pytest

from sqlrs import __version__
from sqlrs.domain import errors
from sqlrs.domain import remote as _remote  # noqa: F401 - its error classes join the hierarchy checked below
from sqlrs.domain.exit_codes import EXIT_ENGINE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from sqlrs.entrypoints.cli.errors import CliError
from sqlrs.entrypoints.engine import http
from sqlrs.entrypoints.engine.app import create_app

TOKEN = "t0ken"
AUTH = [("authorization", f"Bearer {TOKEN}")]


class _BrokenConfig:
    def effective(self) -> dict[str, Any]:
        raise RuntimeError("a bug")


def _app() -> Any:
    services = types.SimpleNamespace(config=_BrokenConfig(), pool=None, lifetime=None, databases=None)
    app, _ = create_app(services, TOKEN, "engine-1")  # type: ignore[arg-type]
    return app


def call(method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> tuple[
        int, dict[str, str], bytes]:
    """One request through the ASGI app: status, headers, body (an exception Starlette re-raises
    after answering, as it does for a 500, is swallowed here)."""
    async def run() -> tuple[int, dict[str, str], bytes]:
        sent: list[dict[str, Any]] = []
        pending = [body]

        async def receive() -> dict[str, Any]:
            if pending:
                return {"type": "http.request", "body": pending.pop(), "more_body": False}
            await asyncio.sleep(60)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(k.encode(), v.encode()) for k, v in headers or []],
                 "client": ("127.0.0.1", 1), "server": ("engine", 80)}
        try:
            await _app()(scope, receive, send)
        except RuntimeError:
            pass
        start = next(m for m in sent if m["type"] == "http.response.start")
        return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
                b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))

    return asyncio.run(run())


def test_health_needs_no_token() -> None:
    status, _, body = call("GET", "/v1/health")
    assert status == 200
    assert json.loads(body)["instance_id"] == "engine-1"


@pytest.mark.parametrize("token", [None, "Bearer wrong"])
def test_a_missing_or_wrong_token_is_refused_as_unauthorized(token: str | None) -> None:
    status, headers, body = call("GET", "/v1/status", headers=[("authorization", token)] if token else [])
    assert (status, headers["content-type"]) == (401, "application/json")
    assert body == (b'{"code":"unauthorized","message":"missing or wrong bearer token",'
                    b'"details":{"hint":"the token is in engine.json in the state directory"}}')
    assert CliError.from_engine(json.loads(body)).exit_code == EXIT_ENGINE


def test_another_major_version_is_refused_except_for_shutdown() -> None:
    other = f"{int(__version__.split('.')[0]) + 1}.0.0"
    status, _, body = call("GET", "/v1/config", headers=[*AUTH, ("x-sqlrs-version", other)])
    assert status == 409
    assert json.loads(body) == {"code": "incompatible_version",
                                "message": f"engine {__version__} cannot serve CLI {other}",
                                "details": {"hint": "restart the engine with: sqlrs engine stop"}}
    assert CliError.from_engine(json.loads(body)).exit_code == EXIT_ENGINE
    status, _, body = call("POST", "/v1/engine/shutdown", headers=[*AUTH, ("x-sqlrs-version", other)])
    assert (status, json.loads(body)["status"]) == (202, "stopping")


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), [
    ("GET", "/v1/nowhere", b"", [], 404, "not_found"),
    ("DELETE", "/v1/health", b"", [], 405, "method_not_allowed"),
    ("PATCH", "/v1/config", b"{nope", [], 400, "invalid_argument"),
    ("PATCH", "/v1/config", b"[]", [], 400, "invalid_argument"),
    ("PATCH", "/v1/config", b'{"no.such.key": 1}', [], 400, "invalid_argument"),
    ("PATCH", "/v1/config", b"{}", [("content-length", str(http.MAX_BODY + 1))], 413, "body_too_large"),
    ("GET", "/v1/config", b"", [], 500, "internal"),  # a bug in a service: no traceback in the answer
])
def test_every_error_has_one_shape(method: str, path: str, body: bytes, headers: list[tuple[str, str]],
                                   status: int, code: str) -> None:
    got_status, got_headers, got = call(method, path, body, [*AUTH, *headers])
    assert (got_status, got_headers["content-type"]) == (status, "application/json")
    answer = json.loads(got)
    assert set(answer) == {"code", "message", "details"}
    assert answer["code"] == code
    assert isinstance(answer["message"], str) and "Traceback" not in answer["message"]


def _hierarchy(cls: type[errors.SqlrsError]) -> list[type[errors.SqlrsError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _hierarchy(child))]


def test_the_cli_exits_with_the_code_the_engine_error_class_has() -> None:
    classes = _hierarchy(errors.SqlrsError)
    assert http.BodyTooLarge in classes and len(classes) > 15
    for cls in classes:
        assert CliError.from_engine(cls("x").to_json()).exit_code == cls.exit_code, cls
    expected = {errors.UsageError: EXIT_USAGE, errors.Ambiguous: EXIT_USAGE, errors.NotFound: EXIT_NOT_FOUND,
                errors.Unauthorized: EXIT_ENGINE, errors.Incompatible: EXIT_ENGINE, errors.Conflict: EXIT_FAILED,
                errors.InUse: EXIT_FAILED, errors.Internal: EXIT_FAILED, http.BodyTooLarge: EXIT_FAILED}
    assert {cls: cls.exit_code for cls in expected} == expected
