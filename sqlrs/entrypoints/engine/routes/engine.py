"""The engine itself: health (no token), status, shutdown, and the OpenAPI document it serves."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from sqlrs import __version__
from sqlrs.domain.errors import SqlrsError
from sqlrs.domain.model import InstanceKind
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.entrypoints.engine.http import engine_state, flag, respond, services

if TYPE_CHECKING:
    from sqlrs.entrypoints.engine.state import EngineState

OPENAPI_PATH = Path(__file__).parent.parent / "openapi.json"


async def health(request: Request) -> Response:
    return respond({"status": "ok", "version": __version__, "instance_id": engine_state(request).instance_id,
                    "pid": os.getpid()})


async def status(request: Request) -> Response:
    report = await run_in_threadpool(status_report, services(request), engine_state(request), flag(request, "cache"))
    return respond(report)


async def shutdown(request: Request) -> Response:
    engine_state(request).shutdown.set()
    return respond({"status": "stopping", "pid": os.getpid()}, status=202)


async def openapi(request: Request) -> Response:
    return Response(OPENAPI_PATH.read_bytes(), media_type="application/json")


def status_report(svc: Services, state: EngineState, with_cache: bool) -> dict[str, Any]:
    """GET /v1/status: the engine, its runtimes, the store, the cache, instances, pools, warnings."""
    probes = svc.registry.probe_all(wait=False)  # stale answers are refreshed in the background
    warnings: list[str] = []
    try:
        choice = svc.registry.choose(None, svc.identities.image_check(None), wait=False)
        runtime: dict[str, str | None] = {"name": choice.runtime.name, "reason": choice.reason}
    except SqlrsError as exc:
        runtime = {"name": None, "reason": exc.message}
        warnings.append(f"no runtime can serve prepares: {exc.message}")
    store = svc.store
    instances = svc.repo.list_instances()
    if svc.store_note:
        warnings.append(svc.store_note)
    report: dict[str, Any] = {
        "engine": {"version": __version__, "pid": os.getpid(), "instance_id": state.instance_id,
                   "uptime_seconds": round(time.time() - state.started, 1),
                   "state_dir": str(svc.layout.state_dir), "running_jobs": svc.jobs.active()},
        "runtime": runtime,
        "runtimes": [{"name": p.name, "available": p.available, "reason": p.reason} for p in probes],
        "snapshot": {"backend": store.backend, "copy_on_write": store.copy_on_write, "root": str(store.root),
                     "free_bytes": store.free_bytes(),
                     "volume": {"image": svc.config.get("store.volume.image") or None,
                                "fs": svc.config.get("store.volume.fs") or None}},
        "cache": svc.cache.usage(),
        "instances": sum(1 for instance in instances if not instance.pooled and instance.kind != InstanceKind.HOST),
        "pools": svc.pool.pools(),
        "shared_servers": svc.databases.hosts(),
        "warm": svc.pool.status(),
        "demand": svc.demand.status(),
        "footprint": svc.footprint.report(),
        "remote": remote_status(svc),
        "warnings": warnings,
    }
    cache = report["cache"]
    if cache.get("max_bytes") and cache["size_bytes"] > cache["max_bytes"]:
        warnings.append(f"the state cache ({cache['size_bytes']} bytes) is over cache.capacity.max_bytes "
                        f"({cache['max_bytes']}, {cache['max_bytes_source']}): states in use cannot be evicted")
    if with_cache:
        report["cache"]["states_detail"] = svc.inventory.list_states()
    return report


def remote_status(svc: Services) -> dict[str, Any] | None:
    """The remote cache as configured; status never waits on a registry."""
    repository = svc.config.get("cache.remote")
    if not repository:
        return None
    return {"repository": repository, "push": bool(svc.config.get("cache.remote_push")),
            "insecure": bool(svc.config.get("cache.remote_insecure"))}
