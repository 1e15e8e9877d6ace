"""The engine's HTTP API (SPEC section 9) as a Starlette application."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sqlrs import __version__
from sqlrs.domain import config as config_schema
from sqlrs.domain.errors import NotFound, SqlrsError, UsageError
from sqlrs.domain.serde import json_converter
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.prepare import name_taken
from sqlrs.services.requests import check_name, parse_prepare, parse_run

log = logging.getLogger("sqlrs.engine")

MAX_BODY = 512 * 1024 * 1024
HEARTBEAT_SECONDS = 5.0
NDJSON = "application/x-ndjson"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": details or {}}, status_code=status)


class EngineState:
    """What the HTTP layer tracks about itself: activity for the idle timer, identity."""

    def __init__(self, services: Services, token: str, instance_id: str):
        self.services = services
        self.token = token
        self.instance_id = instance_id
        self.started = time.time()
        self.last_activity = time.monotonic()
        self.in_flight = 0
        self.shutdown = asyncio.Event()
        self.lock = threading.Lock()

    def busy(self) -> bool:
        return self.in_flight > 0 or self.services.jobs.active() > 0


class GuardMiddleware:
    """Bearer token on everything but health; CLI major version check; activity tracking."""

    def __init__(self, app: ASGIApp, state: EngineState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if path != "/v1/health":
            supplied = headers.get("authorization", "")
            expected = f"Bearer {self.state.token}"
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                response = error_response(401, "unauthorized", "missing or wrong bearer token",
                                          {"hint": "the token is in engine.json in the state directory"})
                await response(scope, receive, send)
                return
            client_version = headers.get("x-sqlrs-version")
            if client_version and client_version.split(".")[0] != __version__.split(".")[0]:
                response = error_response(
                    409, "incompatible_version",
                    f"engine {__version__} cannot serve CLI {client_version}",
                    {"hint": "restart the engine with: sqlrs engine stop"},
                )
                await response(scope, receive, send)
                return
        self.state.in_flight += 1
        self.state.last_activity = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1
            self.state.last_activity = time.monotonic()


async def read_json(request: Request) -> Any:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise SqlrsError("request body too large", details={"limit": MAX_BODY})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise UsageError(f"request body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"the request body is not valid JSON: {exc}") from None


def listing(request: Request, items: list[dict[str, Any]]) -> Response:
    if NDJSON in request.headers.get("accept", ""):
        body = "".join(json.dumps(item) + "\n" for item in items)
        return Response(body, media_type=NDJSON)
    return JSONResponse(items)


def flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("", "1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"query parameter {name} takes true or false")


def create_app(services: Services, token: str, instance_id: str) -> tuple[Starlette, EngineState]:
    state = EngineState(services, token, instance_id)
    inventory = services.inventory

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "instance_id": instance_id, "pid": os.getpid()})

    # -- prepare jobs ------------------------------------------------------------------------
    def job_urls(job_id: str) -> dict[str, str]:
        return {"status_url": f"/v1/prepare-jobs/{job_id}", "events_url": f"/v1/prepare-jobs/{job_id}/events"}

    async def create_job(request: Request) -> Response:
        body = await read_json(request)
        prepare_request = await run_in_threadpool(parse_prepare, body)
        if prepare_request.name and prepare_request.on_name == "error" and not prepare_request.plan_only:
            named = await run_in_threadpool(services.prepare.named_instance, prepare_request.name)
            if named is not None:
                raise name_taken(prepare_request.name, named)  # before queueing anything
        job = services.jobs.submit(
            "plan" if prepare_request.plan_only else "prepare", body,
            lambda ctx: services.prepare.run(ctx, prepare_request),
        )
        payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}
        return JSONResponse(payload, status_code=201, headers={"Location": payload["status_url"]})

    async def list_jobs(request: Request) -> Response:
        return listing(request, await run_in_threadpool(inventory.list_jobs))

    async def get_job(request: Request) -> Response:
        job = await run_in_threadpool(inventory.find_job, request.path_params["job_id"])
        return JSONResponse({**inventory.job_json(job, with_tasks=True), **job_urls(job.id)})

    async def cancel_job(request: Request) -> Response:
        job = await run_in_threadpool(inventory.find_job, request.path_params["job_id"])
        accepted = services.jobs.cancel(job.id)
        return JSONResponse({"job_id": job.id, "cancel_requested": accepted, "status": job.status.value},
                            status_code=202 if accepted else 200)

    async def job_events(request: Request) -> Response:
        job = await run_in_threadpool(inventory.find_job, request.path_params["job_id"])
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            raise UsageError("after takes an event sequence number") from None
        follow = request.query_params.get("follow", "1") not in ("0", "false")
        return StreamingResponse(stream_events(job.id, after, follow), media_type=NDJSON)

    async def stream_events(job_id: str, after: int, follow: bool) -> AsyncIterator[bytes]:
        repo, notifier = services.repo, services.jobs.notifier
        last_beat = time.monotonic()
        while True:
            version = notifier.version(job_id)
            events = await run_in_threadpool(repo.events_after, job_id, after)
            for event in events:
                after = event.seq
                yield (json.dumps(json_converter.unstructure(event)) + "\n").encode()
                last_beat = time.monotonic()
            if events:
                continue
            job = await run_in_threadpool(repo.get_job, job_id)
            if job is None or job.status.terminal or not follow:
                return
            await notifier.wait(job_id, version, max(0.05, HEARTBEAT_SECONDS - (time.monotonic() - last_beat)))
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                yield (json.dumps({"type": "heartbeat", "seq": after}) + "\n").encode()
                last_beat = time.monotonic()

    # -- runs --------------------------------------------------------------------------------
    async def create_run(request: Request) -> Response:
        run_request = parse_run(await read_json(request))
        instance, _ = await run_in_threadpool(inventory.find_instance, run_request.instance)
        await run_in_threadpool(services.instances.ensure_running, instance)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: dict[str, Any] | None) -> None:
            data = None if item is None else (json.dumps(item) + "\n").encode()
            loop.call_soon_threadsafe(queue.put_nowait, data)

        def on_output(stream: str, data: bytes) -> None:
            put({"stream": stream, "data": data.decode("utf-8", "surrogateescape")})

        def work() -> None:
            try:
                code = services.runs.run(run_request, on_output, cancel)
                put({"exit_code": code})
            except SqlrsError as exc:
                put({"error": exc.to_json(), "exit_code": exc.exit_code})
            except Exception as exc:
                log.exception("run failed")
                put({"error": {"code": "internal", "message": str(exc), "details": {}}, "exit_code": 1})
            finally:
                put(None)

        thread = threading.Thread(target=work, name="run", daemon=True)

        async def body() -> AsyncIterator[bytes]:
            thread.start()
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        return
                    yield item
            finally:
                cancel.set()  # the client went away: stop the tool

        return StreamingResponse(body(), media_type=NDJSON)

    # -- states, instances, names ----------------------------------------------------------------
    async def list_states(request: Request) -> Response:
        return listing(request, await run_in_threadpool(inventory.list_states))

    async def get_state(request: Request) -> Response:
        found = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
        return JSONResponse(inventory.state_json(found))

    async def delete_state(request: Request) -> Response:
        ref = request.path_params["state_id"]
        try:
            found = await run_in_threadpool(inventory.find_state, ref)
        except NotFound:
            return JSONResponse({"dry_run": flag(request, "dry_run"), "removed": [], "not_found": True})
        result = await run_in_threadpool(
            lambda: inventory.remove_state(found, recurse=flag(request, "recurse"), force=flag(request, "force"),
                                           dry_run=flag(request, "dry_run"))
        )
        return JSONResponse(result)

    async def list_instances(request: Request) -> Response:
        return listing(request, await run_in_threadpool(inventory.list_instances))

    async def get_instance(request: Request) -> Response:
        ref = request.path_params["instance_id"]
        instance, by_name = await run_in_threadpool(inventory.find_instance, ref)
        if by_name or instance.id != ref:
            return RedirectResponse(f"/v1/instances/{instance.id}", status_code=307)
        return JSONResponse(await run_in_threadpool(inventory.instance_json, instance))

    async def delete_instance(request: Request) -> Response:
        ref = request.path_params["instance_id"]
        dry_run = flag(request, "dry_run")
        try:
            instance, _ = await run_in_threadpool(inventory.find_instance, ref)
        except NotFound:
            return JSONResponse({"dry_run": dry_run, "removed": [], "not_found": True})
        return JSONResponse(await run_in_threadpool(inventory.remove_instance, instance, dry_run))

    async def list_names(request: Request) -> Response:
        names = await run_in_threadpool(services.repo.list_names)
        return listing(request, [json_converter.unstructure(n) for n in names])

    async def get_name(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        binding = await run_in_threadpool(services.repo.get_name, name)
        if binding is None:
            raise NotFound(f"no name {name!r}", hint="list them with: sqlrs ls --names")
        return JSONResponse(json_converter.unstructure(binding))

    # -- config, status, engine ------------------------------------------------------------------
    async def get_config(request: Request) -> Response:
        return JSONResponse(services.config.effective())

    async def patch_config(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not body:
            raise UsageError("PATCH /v1/config takes a JSON object of key: value (null unsets)")
        for key in body:
            config_schema.lookup(key)
        await run_in_threadpool(services.config.update, body)
        return JSONResponse(services.config.effective())

    async def get_config_schema(request: Request) -> Response:
        return JSONResponse(config_schema.schema())

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(status_report, services, state, flag(request, "cache")))

    async def shutdown(request: Request) -> Response:
        state.shutdown.set()
        return JSONResponse({"status": "stopping", "pid": os.getpid()}, status_code=202)

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI_PATH.read_bytes(), media_type="application/json")

    routes = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/prepare-jobs", create_job, methods=["POST"]),
        Route("/v1/prepare-jobs", list_jobs, methods=["GET"]),
        Route("/v1/prepare-jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/prepare-jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/v1/prepare-jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/runs", create_run, methods=["POST"]),
        Route("/v1/states", list_states, methods=["GET"]),
        Route("/v1/states/{state_id}", get_state, methods=["GET"]),
        Route("/v1/states/{state_id}", delete_state, methods=["DELETE"]),
        Route("/v1/instances", list_instances, methods=["GET"]),
        Route("/v1/instances/{instance_id}", get_instance, methods=["GET"]),
        Route("/v1/instances/{instance_id}", delete_instance, methods=["DELETE"]),
        Route("/v1/names", list_names, methods=["GET"]),
        Route("/v1/names/{name}", get_name, methods=["GET"]),
        Route("/v1/config", get_config, methods=["GET"]),
        Route("/v1/config", patch_config, methods=["PATCH"]),
        Route("/v1/config/schema", get_config_schema, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/engine/shutdown", shutdown, methods=["POST"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
    ]

    async def on_sqlrs_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SqlrsError)
        return JSONResponse(exc.to_json(), status_code=exc.http_status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", f"internal error: {type(exc).__name__}",
                              {"hint": "see engine.log in the state directory"})

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        SqlrsError: on_sqlrs_error, HTTPException: on_http_error, Exception: on_unexpected,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    return GuardMiddleware(app, state), state  # type: ignore[return-value]


def status_report(services: Services, state: EngineState, with_cache: bool) -> dict[str, Any]:
    probes = services.registry.probe_all()
    try:
        choice = services.registry.choose(None)
        runtime: dict[str, str | None] = {"name": choice.runtime.name, "reason": choice.reason}
    except SqlrsError as exc:
        runtime = {"name": None, "reason": exc.message}
    store = services.store
    states = services.repo.list_states()
    instances = services.repo.list_instances()
    warnings = []
    if services.store_note:
        warnings.append(services.store_note)
    report: dict[str, Any] = {
        "engine": {"version": __version__, "pid": os.getpid(), "instance_id": state.instance_id,
                   "uptime_seconds": round(time.time() - state.started, 1),
                   "state_dir": str(services.layout.state_dir), "running_jobs": services.jobs.active()},
        "runtime": runtime,
        "runtimes": [{"name": p.name, "available": p.available, "reason": p.reason} for p in probes],
        "snapshot": {"backend": store.backend, "root": str(store.root), "free_bytes": store.free_bytes()},
        "cache": {"states": len(states), "size_bytes": sum(s.size_bytes for s in states),
                  "max_bytes": services.config.get("cache.capacity.max_bytes"),
                  "reserve_bytes": services.config.get("cache.capacity.reserve_bytes")},
        "instances": len(instances),
        "warnings": warnings,
    }
    if with_cache:
        report["cache"]["states_detail"] = services.inventory.list_states()
    return report

