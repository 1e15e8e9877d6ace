"""The engine's configuration: effective values, changes (some wait for a restart), the schema."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs import extensions
from sqlrs.domain import config as config_schema
from sqlrs.domain.errors import UsageError
from sqlrs.entrypoints.engine.bootstrap import reconfigure
from sqlrs.entrypoints.engine.http import read_json, respond, services


async def get_config(request: Request) -> Response:
    return respond(services(request).config.effective())


async def patch_config(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body:
        raise UsageError("PATCH /v1/config takes a JSON object of key: value (null unsets)")
    for key in body:
        config_schema.lookup(key)
    waiting = await run_in_threadpool(reconfigure, svc, body)
    if svc.pool is not None:
        svc.pool.wake()  # e.g. fewer warm instances now: the surplus goes at once
    # the keys that take effect only once the engine restarts
    headers = {"X-Sqlrs-Restart-Needed": ",".join(waiting)} if waiting else None
    return respond(svc.config.effective(), headers=headers)


async def get_config_schema(request: Request) -> Response:
    return respond(config_schema.schema(extensions.names))
