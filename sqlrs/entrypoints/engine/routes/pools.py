"""Warm pools: keep N instances of a state started ahead, held by named holders."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs.domain.errors import NotFound
from sqlrs.entrypoints.engine.http import listing, read_json, respond, services
from sqlrs.services.requests import parse_pool


async def list_pools(request: Request) -> Response:
    return listing(request, services(request).pool.pools())


async def put_pool(request: Request) -> Response:
    svc = services(request)
    wanted = parse_pool(await read_json(request))
    state = await run_in_threadpool(svc.inventory.find_state, request.path_params["state_id"])
    data = await run_in_threadpool(svc.pool.configure, state, wanted.size, wanted.image, wanted.holder)
    if wanted.owner is not None and wanted.holder:
        svc.lifetime.hold(state.id, wanted.holder, (wanted.owner.pid, wanted.owner.started))
    if wanted.wait_ready > 0 and wanted.size > 0:
        data = await run_in_threadpool(svc.pool.wait_ready, state.id, wanted.size, wanted.wait_ready)
    return respond(data)


async def get_pool(request: Request) -> Response:
    svc = services(request)
    state = await run_in_threadpool(svc.inventory.find_state, request.path_params["state_id"])
    return respond(svc.pool.get(state.id))


async def delete_pool(request: Request) -> Response:
    svc = services(request)
    try:
        state = await run_in_threadpool(svc.inventory.find_state, request.path_params["state_id"])
    except NotFound:
        return respond({"state_id": request.path_params["state_id"], "drained": False, "holders": 0,
                        "not_found": True})
    holder = request.query_params.get("holder") or None
    # the engine drains in the background: a leaving holder (a test session ending) never waits
    svc.lifetime.unhold(state.id, holder)
    data = await run_in_threadpool(svc.pool.release, state.id, holder, False)
    if data is None:
        return respond({"state_id": state.id, "drained": False, "holders": 0, "not_found": True})
    return respond({"state_id": state.id, "drained": data["holders"] == 0 or holder is None,
                    "holders": 0 if holder is None else data["holders"]})
