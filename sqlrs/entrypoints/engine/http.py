"""The engine's HTTP plumbing shared by every route: reading bodies and flags, and the one place
that shapes JSON answers and errors.

Every error leaves the engine as `{"code", "message", "details"}` (`details.hint` when there is
one) with the HTTP status of its class in sqlrs.domain.errors: routes raise, they never write an
error by hand. The route handlers (sqlrs/entrypoints/engine/routes/) reach the services and the
engine's own state through `services(request)` and `engine_state(request)`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sqlrs.domain.errors import Internal, SqlrsError, UsageError, no_space_for

if TYPE_CHECKING:
    from sqlrs.entrypoints.engine.bootstrap import Services
    from sqlrs.entrypoints.engine.state import EngineState

log = logging.getLogger("sqlrs.engine")

MAX_BODY = int(os.environ.get("SQLRS_MAX_BODY", 256 * 1024 * 1024))
NDJSON = "application/x-ndjson"


class BodyTooLarge(UsageError):
    code = "body_too_large"
    http_status = 413


def services(request: Request) -> Services:
    """The engine's services (set on the Starlette app by create_app)."""
    found: Services = request.app.state.services
    return found


def engine_state(request: Request) -> EngineState:
    """What the HTTP layer tracks about itself: identity, activity, the shutdown event."""
    found: EngineState = request.app.state.engine
    return found


# -- requests ------------------------------------------------------------------------------------

async def read_json(request: Request) -> Any:
    """The request body as JSON ({} when empty), refused past MAX_BODY bytes before it is all read."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise UsageError("invalid Content-Length") from None
    if declared > MAX_BODY:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {MAX_BODY}",
                           details={"limit": MAX_BODY})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge(f"request body exceeds the limit of {MAX_BODY} bytes", details={"limit": MAX_BODY})
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the request body is not valid JSON: {exc}") from None


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter: absent is false, a bare `?name` true."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("", "1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"query parameter {name} takes true or false")


# -- answers -------------------------------------------------------------------------------------

def respond(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def created(data: Any, location: str) -> JSONResponse:
    """201 with the new resource's URL in Location."""
    return JSONResponse(data, status_code=201, headers={"Location": location})


def ndjson_line(item: Any) -> bytes:
    """One line of an NDJSON stream (job events, run output)."""
    return (json.dumps(item) + "\n").encode()


def listing(request: Request, items: list[dict[str, Any]]) -> Response:
    """A JSON array, or NDJSON when the client accepts it (one object a line)."""
    if NDJSON in request.headers.get("accept", ""):
        return Response(b"".join(ndjson_line(item) for item in items), media_type=NDJSON)
    return JSONResponse(items)


def error_json(exc: BaseException) -> dict[str, Any]:
    """`{code, message, details}` of an error; anything but a SqlrsError is an internal one."""
    return (exc if isinstance(exc, SqlrsError) else Internal(str(exc))).to_json()


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def error_response(exc: SqlrsError) -> JSONResponse:
    """The answer to a request that raised `exc`: its JSON with its class's HTTP status."""
    return _error(exc.http_status, exc.to_json())


async def _on_sqlrs_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SqlrsError)
    return error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own: an unknown path or a method a path does not take
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, {"code": code, "message": str(exc.detail), "details": {}})


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    full = no_space_for(exc)  # a full filesystem is the machine's state, not a bug
    if full is not None:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(full)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(Internal(f"internal error: {type(exc).__name__}",
                                   hint="see engine.log in the state directory"))


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    SqlrsError: _on_sqlrs_error, HTTPException: _on_http_error, Exception: _on_unexpected,
}
