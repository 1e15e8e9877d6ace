"""Instances (list, get, create from a cached state, change the TTL, remove) and names."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sqlrs.domain.errors import NotFound, UsageError
from sqlrs.domain.model import Instance, InstanceKind
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.entrypoints.engine.http import created, flag, listing, read_json, respond, services
from sqlrs.services.requests import check_name, parse_instance
from sqlrs.services.serde import json_converter

EPHEMERAL_TTL_SECONDS = 60  # idle TTL of a composite `prepare ... run ...` instance (docs/cli.md)


def default_ttl(svc: Services, ephemeral: bool = False) -> int:
    """The idle TTL of a new instance whose request named none: config instance.ttl_seconds."""
    ttl = int(svc.config.get("instance.ttl_seconds"))
    if not ephemeral:
        return ttl
    # a composite's CLI removes its instance after the run; when it detached or died first
    # nobody would, so the instance goes once unused (no client, no run) for a short while
    return min(ttl, EPHEMERAL_TTL_SECONDS) if ttl > 0 else EPHEMERAL_TTL_SECONDS


def with_lifetime(svc: Services, item: dict[str, Any]) -> dict[str, Any]:
    """An instance's JSON with its remaining TTL and last seen connection count."""
    if svc.lifetime is not None:
        last_used = item.get("last_used_at")
        item.update(svc.lifetime.describe(
            item["id"], int(item.get("ttl_seconds") or 0), bool(item.get("pooled")),
            datetime.fromisoformat(last_used) if isinstance(last_used, str) else None))
    return item


async def list_instances(request: Request) -> Response:
    svc = services(request)
    # warm instances are the engine's, not the user's (see status): listed on request only
    items = await run_in_threadpool(svc.inventory.list_instances, flag(request, "warm"))
    return listing(request, [with_lifetime(svc, item) for item in items])


async def get_instance(request: Request) -> Response:
    svc = services(request)
    ref = request.path_params["instance_id"]
    instance, by_name = await run_in_threadpool(svc.inventory.find_instance, ref)
    if by_name or instance.id != ref:
        return RedirectResponse(f"/v1/instances/{instance.id}", status_code=307)
    return respond(with_lifetime(svc, await run_in_threadpool(svc.inventory.instance_json, instance)))


async def create_instance(request: Request) -> Response:
    svc = services(request)
    wanted = parse_instance(await read_json(request))
    started = time.monotonic()

    def create() -> tuple[Instance, bool]:  # one thread hop: a pool claim must stay a few milliseconds
        state = svc.inventory.find_state(wanted.state_id)
        ttl = wanted.ttl_seconds if wanted.ttl_seconds is not None else default_ttl(svc)
        if wanted.name:
            svc.prepare.require_name_free(wanted.name)
        made, ahead = svc.instances.hand_out(state, InstanceKind(wanted.kind), wanted.image, name=wanted.name,
                                             ttl_seconds=ttl, spares=wanted.spares)
        owner = (wanted.owner.pid, wanted.owner.started) if wanted.owner is not None else None
        return svc.lifetime.adopt(made, owner) if owner else made, ahead

    instance, from_pool = await run_in_threadpool(create)
    svc.lifetime.noticed(instance)
    payload = with_lifetime(svc, svc.inventory.instance_json(instance, live=False))
    payload.update(from_pool=from_pool, seconds=round(time.monotonic() - started, 4))
    return created(payload, f"/v1/instances/{instance.id}")


async def patch_instance(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request)
    # {"owner": null} disowns the instance (kept beyond its owner process, e.g. a failed test's)
    disown = isinstance(body, dict) and "owner" in body
    if disown and body.pop("owner") is not None:
        raise UsageError("PATCH /v1/instances/{id} takes \"owner\": null only (to disown the instance)")
    if not isinstance(body, dict) or set(body) != {"ttl_seconds"} or not isinstance(body["ttl_seconds"], int) \
            or isinstance(body["ttl_seconds"], bool) or body["ttl_seconds"] < 0:
        raise UsageError("PATCH /v1/instances/{id} takes {\"ttl_seconds\": N} (N >= 0; 0: no TTL) "
                         "and optionally \"owner\": null")
    instance, _ = await run_in_threadpool(svc.inventory.find_instance, request.path_params["instance_id"])

    def update() -> dict[str, Any]:
        current = svc.repo.get_instance(instance.id)
        if current is None:
            raise NotFound(f"instance {instance.id} was removed")
        current.ttl_seconds = body["ttl_seconds"]
        current.last_used_at = svc.clock.now()
        if disown:
            current.owner_pid = current.owner_started = None
        svc.repo.update_instance(current)
        svc.lifetime.touch(current.id)
        svc.lifetime.noticed(current)
        return svc.inventory.instance_json(current)

    return respond(with_lifetime(svc, await run_in_threadpool(update)))


async def delete_instance(request: Request) -> Response:
    svc = services(request)
    ref = request.path_params["instance_id"]
    dry_run = flag(request, "dry_run")
    try:
        instance, _ = await run_in_threadpool(svc.inventory.find_instance, ref)
    except NotFound:
        return respond({"dry_run": dry_run, "removed": [], "not_found": True})
    # clients connected: refused (409 in_use) unless force; internal removals always force
    return respond(await run_in_threadpool(svc.inventory.remove_instance, instance, dry_run, flag(request, "force")))


# -- names ---------------------------------------------------------------------------------------

async def list_names(request: Request) -> Response:
    names = await run_in_threadpool(services(request).repo.list_names)
    return listing(request, [json_converter.unstructure(n) for n in names])


async def get_name(request: Request) -> Response:
    name = check_name(request.path_params["name"])
    binding = await run_in_threadpool(services(request).repo.get_name, name)
    if binding is None:
        raise NotFound(f"no name {name!r}", hint="list them with: sqlrs ls --names")
    return respond(json_converter.unstructure(binding))
