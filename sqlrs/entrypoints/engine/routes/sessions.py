"""Sessions: a client says when a run of claims on a state (a test session) begins and ends, so the
engine keeps spares at the run's demand while it lasts and lets them go as soon as it ends."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs.entrypoints.engine.http import listing, read_json, respond, services
from sqlrs.services.requests import parse_session


async def list_sessions(request: Request) -> Response:
    held = services(request).demand.sessions()
    return listing(request, [{"session": session, "state_ids": sorted(states)} for session, states in
                             sorted(held.items())])


async def put_session(request: Request) -> Response:
    svc = services(request)
    session = request.path_params["session"]
    wanted = parse_session(await read_json(request))
    state = await run_in_threadpool(svc.inventory.find_state, wanted.state_id)
    data = await run_in_threadpool(svc.demand.begin, session, state.id)
    if wanted.owner is not None:
        svc.lifetime.hold(state.id, session, (wanted.owner.pid, wanted.owner.started))
    return respond(data)


async def delete_session(request: Request) -> Response:
    svc = services(request)
    session = request.path_params["session"]
    data = await run_in_threadpool(svc.demand.end, session)
    for state_id in data["state_ids"]:
        svc.lifetime.unhold(state_id, session)
    return respond(data)
