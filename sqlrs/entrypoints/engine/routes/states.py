"""States: list, get, remove; snapshots of instances (new states); cache lookups by key."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs.domain.errors import NotFound
from sqlrs.entrypoints.engine.http import created, flag, listing, read_json, respond, services
from sqlrs.services.requests import parse_snapshot


async def list_states(request: Request) -> Response:
    return listing(request, await run_in_threadpool(services(request).inventory.list_states))


async def get_state(request: Request) -> Response:
    inventory = services(request).inventory
    found = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
    return respond(inventory.state_json(found))


async def delete_state(request: Request) -> Response:
    inventory = services(request).inventory
    try:
        found = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
    except NotFound:
        return respond({"dry_run": flag(request, "dry_run"), "removed": [], "not_found": True})
    recurse, force, dry_run = flag(request, "recurse"), flag(request, "force"), flag(request, "dry_run")
    return respond(await run_in_threadpool(
        lambda: inventory.remove_state(found, recurse=recurse, force=force, dry_run=dry_run)))


async def create_snapshot(request: Request) -> Response:
    svc = services(request)
    wanted = parse_snapshot(await read_json(request))
    instance, _ = await run_in_threadpool(svc.inventory.find_instance, wanted.instance)
    made = await run_in_threadpool(svc.snapshots.snapshot, instance, wanted.name)
    return created(await run_in_threadpool(svc.inventory.state_json, made), f"/v1/states/{made.id}")


async def get_cache_entry(request: Request) -> Response:
    inventory = services(request).inventory
    key = request.path_params["key"]
    if not key or not all(c in "0123456789abcdef" for c in key) or len(key) > 64:
        raise NotFound(f"no cached state matches {key!r}", hint="cache keys are state ids (hex)")
    found = await run_in_threadpool(inventory.find_state, key)
    return respond(await run_in_threadpool(inventory.state_json, found))
