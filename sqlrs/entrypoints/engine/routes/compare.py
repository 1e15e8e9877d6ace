"""Comparing two states or instances (services/compare.py)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs.domain.compare import DataMode
from sqlrs.entrypoints.engine.http import read_json, respond, services
from sqlrs.services.requests import parse_compare


async def create_comparison(request: Request) -> Response:
    wanted = parse_compare(await read_json(request))
    return respond(await run_in_threadpool(services(request).compare.compare, wanted.a, wanted.b,
                                           DataMode(wanted.data), wanted.ignore, wanted.image))
