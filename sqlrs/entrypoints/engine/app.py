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
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
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
from sqlrs.domain.model import Instance
from sqlrs.entrypoints.engine.bootstrap import Services, check_runtimes, reconfigure
from sqlrs.services.prepare import name_taken
from sqlrs.services.requests import check_name, parse_instance, parse_pool, parse_prepare, parse_run, parse_snapshot
from sqlrs.services.serde import json_converter

log = logging.getLogger("sqlrs.engine")

MAX_BODY = int(os.environ.get("SQLRS_MAX_BODY", 256 * 1024 * 1024))
HEARTBEAT_SECONDS = 5.0
EPHEMERAL_TTL_SECONDS = 60  # idle TTL of a composite `prepare ... run ...` instance (docs/cli.md)
NDJSON = "application/x-ndjson"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": details or {}}, status_code=status)


class BodyTooLarge(UsageError):
    code = "body_too_large"
    http_status = 413


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
        # called on a wrong token: the engine writes engine.json again if it no longer names it
        # (replaced or removed by someone), so the client's rediscovery finds the right token
        self.republish: Callable[[], None] = lambda: None

    def busy(self) -> bool:
        # instances with a TTL keep the engine up: nobody else would remove them when they expire
        lifetime = self.services.lifetime
        databases = self.services.databases  # shared servers are stopped by this engine once idle
        return (self.in_flight > 0 or self.services.jobs.active() > 0 or (lifetime is not None and lifetime.pending())
                or (databases is not None and databases.pending()))


# Work across versions, so a CLI can always find and stop an engine of another major version.
VERSION_EXEMPT = ("/v1/health", "/v1/engine/shutdown")


class GuardMiddleware:
    """Bearer token on everything but health; CLI major version check (not on health and
    shutdown); activity tracking."""

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
                self.state.republish()
                response = error_response(401, "unauthorized", "missing or wrong bearer token",
                                          {"hint": "the token is in engine.json in the state directory"})
                await response(scope, receive, send)
                return
            client_version = headers.get("x-sqlrs-version")
            if client_version and path not in VERSION_EXEMPT \
                    and client_version.split(".")[0] != __version__.split(".")[0]:
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


def summarize_request(body: dict[str, Any], parsed: Any) -> dict[str, Any]:
    """The request as the job keeps it: steps by source and digest, not megabytes of scripts."""
    return {**body, "steps": [{"kind": step.kind, "source": step.source, "digest": step.content_digest()}
                              for step in parsed.steps]}


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
    def default_ttl(ephemeral: bool) -> int:
        ttl = int(services.config.get("instance.ttl_seconds"))
        if not ephemeral:
            return ttl
        # a composite's CLI removes its instance after the run; when it detached or died first
        # nobody would, so the instance goes once unused (no client, no run) for a short while
        return min(ttl, EPHEMERAL_TTL_SECONDS) if ttl > 0 else EPHEMERAL_TTL_SECONDS

    def job_urls(job_id: str) -> dict[str, str]:
        return {"status_url": f"/v1/prepare-jobs/{job_id}", "events_url": f"/v1/prepare-jobs/{job_id}/events"}

    async def create_job(request: Request) -> Response:
        body = await read_json(request)
        prepare_request = await run_in_threadpool(parse_prepare, body)
        if prepare_request.from_state is not None:  # a missing or ambiguous state: refused before queueing
            prepare_request = await run_in_threadpool(services.prepare.with_start, prepare_request)
        if prepare_request.ttl_seconds is None and not prepare_request.plan_only:
            prepare_request = attrs.evolve(prepare_request, ttl_seconds=default_ttl(prepare_request.ephemeral))
        if prepare_request.name and prepare_request.on_name == "error" and not prepare_request.plan_only:
            named = await run_in_threadpool(services.prepare.named_instance, prepare_request.name)
            if named is not None:
                raise name_taken(prepare_request.name, named)  # before queueing anything
        if not prepare_request.plan_only and not all(step.has_content for step in prepare_request.steps):
            await run_in_threadpool(services.prepare.require_content_for_builds, prepare_request)
        job = services.jobs.submit(
            "plan" if prepare_request.plan_only else "prepare", summarize_request(body, prepare_request),
            lambda ctx: services.prepare.run(ctx, prepare_request),
        )
        payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}
        if flag(request, "watch"):
            # the job id, then its events as /events would stream them: one round trip less
            async def created_then_events() -> AsyncIterator[bytes]:
                yield (json.dumps({"type": "created", **payload}) + "\n").encode()
                async for line in stream_events(job.id, 0, True):
                    yield line

            return StreamingResponse(created_then_events(), status_code=201, media_type=NDJSON,
                                     headers={"Location": payload["status_url"]})
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

    # -- push and pull: jobs whose events and status live with the prepare jobs' ------------------
    async def create_push_job(request: Request) -> Response:
        from sqlrs.services.remote import parse_transfer

        body = parse_transfer(await read_json(request), "state")

        def resolve() -> Any:
            return services.remote.resolve_state(body["state"], inventory.find_instance, inventory.find_state)

        state = await run_in_threadpool(resolve)
        target = body.get("target")
        if target:  # a malformed reference is the caller's mistake, not a failed job
            from sqlrs.domain.remote import parse_ref

            parse_ref(target)
        job = services.jobs.submit("push", {**body, "state": state.id},
                                   lambda ctx: services.remote.push(ctx, state, target, image=body.get("image")))
        payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}
        return JSONResponse(payload, status_code=201, headers={"Location": payload["status_url"]})

    async def create_pull_job(request: Request) -> Response:
        from sqlrs.services.remote import parse_transfer

        body = parse_transfer(await read_json(request), "ref")

        job = services.jobs.submit("pull", body, lambda ctx: services.remote.pull(ctx, body["ref"], body.get("runtime"),
                                                                                  body.get("image")))
        payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}
        return JSONResponse(payload, status_code=201, headers={"Location": payload["status_url"]})

    # -- runs --------------------------------------------------------------------------------
    async def create_run(request: Request) -> Response:
        run_request = parse_run(await read_json(request))
        instance, _ = await run_in_threadpool(inventory.find_instance, run_request.instance)
        await run_in_threadpool(services.instances.ensure_running, instance)
        if services.lifetime is not None:
            services.lifetime.touch(instance.id)
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

    def with_lifetime(item: dict[str, Any]) -> dict[str, Any]:
        """An instance's JSON with its remaining TTL and last seen connection count."""
        if services.lifetime is not None:
            last_used = item.get("last_used_at")
            item.update(services.lifetime.describe(
                item["id"], int(item.get("ttl_seconds") or 0), bool(item.get("pooled")),
                datetime.fromisoformat(last_used) if isinstance(last_used, str) else None))
        return item

    async def list_instances(request: Request) -> Response:
        # warm instances are the engine's, not the user's (see status): listed on request only
        items = await run_in_threadpool(inventory.list_instances, flag(request, "warm"))
        return listing(request, [with_lifetime(item) for item in items])

    async def get_instance(request: Request) -> Response:
        ref = request.path_params["instance_id"]
        instance, by_name = await run_in_threadpool(inventory.find_instance, ref)
        if by_name or instance.id != ref:
            return RedirectResponse(f"/v1/instances/{instance.id}", status_code=307)
        return JSONResponse(with_lifetime(await run_in_threadpool(inventory.instance_json, instance)))

    async def create_instance(request: Request) -> Response:
        wanted = parse_instance(await read_json(request))
        started = time.monotonic()

        def create() -> tuple[Instance, bool]:  # one thread hop: a pool claim must stay a few milliseconds
            state = inventory.find_state(wanted.state_id)
            ttl = wanted.ttl_seconds
            if ttl is None:
                ttl = int(services.config.get("instance.ttl_seconds"))
            if wanted.name:
                named = services.prepare.named_instance(wanted.name)
                if named is not None:
                    raise name_taken(wanted.name, named)
            owner = (wanted.owner.pid, wanted.owner.started) if wanted.owner is not None else None
            if wanted.kind == "database":
                runtime, identity = services.pool.resolve(state, wanted.image)
                created = services.databases.create(state, runtime, identity, name=wanted.name, ttl_seconds=ttl)
                return services.lifetime.adopt(created, owner) if owner else created, False
            # a warm instance when one is ready (`pool` is implied: every state used lately has some)
            # (the state's id pins the image content: no need to resolve the image for that)
            claimed = services.pool.claim(state.id, ttl, wanted.name)
            if claimed is not None:
                services.pool.used(state, claimed.runtime, claimed.image)
                return services.lifetime.adopt(claimed, owner) if owner else claimed, True
            runtime, identity = services.pool.resolve(state, wanted.image)
            created = services.instances.create(state, runtime, identity, name=wanted.name, ttl_seconds=ttl,
                                                claim=False)
            return services.lifetime.adopt(created, owner) if owner else created, False

        instance, from_pool = await run_in_threadpool(create)
        services.lifetime.noticed(instance)
        payload = with_lifetime(inventory.instance_json(instance, live=False))
        payload.update(from_pool=from_pool, seconds=round(time.monotonic() - started, 4))
        return JSONResponse(payload, status_code=201, headers={"Location": f"/v1/instances/{instance.id}"})

    async def patch_instance(request: Request) -> Response:
        body = await read_json(request)
        # {"owner": null} disowns the instance (kept beyond its owner process, e.g. a failed test's)
        disown = isinstance(body, dict) and "owner" in body
        if disown and body.pop("owner") is not None:
            raise UsageError("PATCH /v1/instances/{id} takes \"owner\": null only (to disown the instance)")
        if not isinstance(body, dict) or set(body) != {"ttl_seconds"} or not isinstance(body["ttl_seconds"], int) \
                or isinstance(body["ttl_seconds"], bool) or body["ttl_seconds"] < 0:
            raise UsageError("PATCH /v1/instances/{id} takes {\"ttl_seconds\": N} (N >= 0; 0: no TTL) "
                             "and optionally \"owner\": null")
        instance, _ = await run_in_threadpool(inventory.find_instance, request.path_params["instance_id"])

        def update() -> dict[str, Any]:
            current = services.repo.get_instance(instance.id)
            if current is None:
                raise NotFound(f"instance {instance.id} was removed")
            current.ttl_seconds = body["ttl_seconds"]
            current.last_used_at = services.clock.now()
            if disown:
                current.owner_pid = current.owner_started = None
            services.repo.update_instance(current)
            services.lifetime.touch(current.id)
            services.lifetime.noticed(current)
            return inventory.instance_json(current)

        return JSONResponse(with_lifetime(await run_in_threadpool(update)))

    # -- warm pools ------------------------------------------------------------------------------
    async def list_pools(request: Request) -> Response:
        return listing(request, services.pool.pools())

    async def put_pool(request: Request) -> Response:
        wanted = parse_pool(await read_json(request))
        state = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
        data = await run_in_threadpool(services.pool.configure, state, wanted.size, wanted.image, wanted.holder)
        if wanted.owner is not None and wanted.holder:
            services.lifetime.hold(state.id, wanted.holder, (wanted.owner.pid, wanted.owner.started))
        if wanted.wait_ready > 0 and wanted.size > 0:
            data = await run_in_threadpool(services.pool.wait_ready, state.id, wanted.size, wanted.wait_ready)
        return JSONResponse(data)

    async def get_pool(request: Request) -> Response:
        state = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
        return JSONResponse(services.pool.get(state.id))

    async def delete_pool(request: Request) -> Response:
        try:
            state = await run_in_threadpool(inventory.find_state, request.path_params["state_id"])
        except NotFound:
            return JSONResponse({"state_id": request.path_params["state_id"], "drained": False, "holders": 0,
                                 "not_found": True})
        holder = request.query_params.get("holder") or None
        # the engine drains in the background: a leaving holder (a test session ending) never waits
        services.lifetime.unhold(state.id, holder)
        data = await run_in_threadpool(services.pool.release, state.id, holder, False)
        if data is None:
            return JSONResponse({"state_id": state.id, "drained": False, "holders": 0, "not_found": True})
        return JSONResponse({"state_id": state.id, "drained": data["holders"] == 0 or holder is None,
                             "holders": 0 if holder is None else data["holders"]})

    async def delete_instance(request: Request) -> Response:
        ref = request.path_params["instance_id"]
        dry_run = flag(request, "dry_run")
        try:
            instance, _ = await run_in_threadpool(inventory.find_instance, ref)
        except NotFound:
            return JSONResponse({"dry_run": dry_run, "removed": [], "not_found": True})
        # clients connected: refused (409 in_use) unless force; internal removals always force
        return JSONResponse(await run_in_threadpool(inventory.remove_instance, instance, dry_run,
                                                    flag(request, "force")))

    async def list_names(request: Request) -> Response:
        names = await run_in_threadpool(services.repo.list_names)
        return listing(request, [json_converter.unstructure(n) for n in names])

    async def get_name(request: Request) -> Response:
        name = check_name(request.path_params["name"])
        binding = await run_in_threadpool(services.repo.get_name, name)
        if binding is None:
            raise NotFound(f"no name {name!r}", hint="list them with: sqlrs ls --names")
        return JSONResponse(json_converter.unstructure(binding))

    # -- snapshots, cache lookups ---------------------------------------------------------------
    async def create_snapshot(request: Request) -> Response:
        wanted = parse_snapshot(await read_json(request))
        instance, _ = await run_in_threadpool(inventory.find_instance, wanted.instance)
        made = await run_in_threadpool(services.snapshots.snapshot, instance, wanted.name)
        return JSONResponse(await run_in_threadpool(inventory.state_json, made), status_code=201,
                            headers={"Location": f"/v1/states/{made.id}"})

    async def get_cache_entry(request: Request) -> Response:
        key = request.path_params["key"]
        if not key or not all(c in "0123456789abcdef" for c in key) or len(key) > 64:
            raise NotFound(f"no cached state matches {key!r}", hint="cache keys are state ids (hex)")
        found = await run_in_threadpool(inventory.find_state, key)
        return JSONResponse(await run_in_threadpool(inventory.state_json, found))

    # -- config, status, engine ------------------------------------------------------------------
    async def get_config(request: Request) -> Response:
        return JSONResponse(services.config.effective())

    async def patch_config(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not body:
            raise UsageError("PATCH /v1/config takes a JSON object of key: value (null unsets)")
        for key in body:
            config_schema.lookup(key)
        waiting = await run_in_threadpool(reconfigure, services, body)
        if services.pool is not None:
            services.pool.wake()  # e.g. fewer warm instances now: the surplus goes at once
        headers = {"X-Sqlrs-Restart-Needed": ",".join(waiting)} if waiting else None
        return JSONResponse(services.config.effective(), headers=headers)

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
        Route("/v1/push-jobs", create_push_job, methods=["POST"]),
        Route("/v1/pull-jobs", create_pull_job, methods=["POST"]),
        Route("/v1/runs", create_run, methods=["POST"]),
        Route("/v1/states", list_states, methods=["GET"]),
        Route("/v1/states/{state_id}", get_state, methods=["GET"]),
        Route("/v1/states/{state_id}", delete_state, methods=["DELETE"]),
        Route("/v1/instances", list_instances, methods=["GET"]),
        Route("/v1/instances", create_instance, methods=["POST"]),
        Route("/v1/instances/{instance_id}", get_instance, methods=["GET"]),
        Route("/v1/instances/{instance_id}", patch_instance, methods=["PATCH"]),
        Route("/v1/instances/{instance_id}", delete_instance, methods=["DELETE"]),
        Route("/v1/pools", list_pools, methods=["GET"]),
        Route("/v1/pools/{state_id}", get_pool, methods=["GET"]),
        Route("/v1/pools/{state_id}", put_pool, methods=["PUT"]),
        Route("/v1/pools/{state_id}", delete_pool, methods=["DELETE"]),
        Route("/v1/names", list_names, methods=["GET"]),
        Route("/v1/names/{name}", get_name, methods=["GET"]),
        Route("/v1/snapshots", create_snapshot, methods=["POST"]),
        Route("/v1/cache/{key}", get_cache_entry, methods=["GET"]),
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
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # idle TTLs and warm pools run as engine background threads for the life of the server
        threading.Thread(target=check_runtimes, args=(services,), name="sqlrs-runtime-check", daemon=True).start()
        if services.pool is not None:
            await run_in_threadpool(services.pool.recover)
            services.pool.start()
        if services.databases is not None:
            await run_in_threadpool(services.databases.recover)
            services.databases.start()
        if services.lifetime is not None:
            services.lifetime.start()
        try:
            yield
        finally:
            if services.pool is not None:
                await run_in_threadpool(services.pool.close)  # drains the pools: spares are removed
            if services.databases is not None:
                await run_in_threadpool(services.databases.close)  # drops the copies made ahead
            if services.lifetime is not None:
                await run_in_threadpool(services.lifetime.stop)
            if services.instances.standby is not None:
                await run_in_threadpool(services.instances.standby.close)

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return GuardMiddleware(app, state), state  # type: ignore[return-value]


def status_report(services: Services, state: EngineState, with_cache: bool) -> dict[str, Any]:
    probes = services.registry.probe_all(wait=False)  # stale answers are refreshed in the background
    warnings: list[str] = []
    try:
        choice = services.registry.choose(None, services.prepare.image_check(None), wait=False)
        runtime: dict[str, str | None] = {"name": choice.runtime.name, "reason": choice.reason}
    except SqlrsError as exc:
        runtime = {"name": None, "reason": exc.message}
        warnings.append(f"no runtime can serve prepares: {exc.message}")
    store = services.store
    states = services.repo.list_states()
    instances = services.repo.list_instances()
    if services.store_note:
        warnings.append(services.store_note)
    report: dict[str, Any] = {
        "engine": {"version": __version__, "pid": os.getpid(), "instance_id": state.instance_id,
                   "uptime_seconds": round(time.time() - state.started, 1),
                   "state_dir": str(services.layout.state_dir), "running_jobs": services.jobs.active()},
        "runtime": runtime,
        "runtimes": [{"name": p.name, "available": p.available, "reason": p.reason} for p in probes],
        "snapshot": {"backend": store.backend, "root": str(store.root), "free_bytes": store.free_bytes(),
                     "volume": {"image": services.config.get("store.volume.image") or None,
                                "fs": services.config.get("store.volume.fs") or None}},
        "cache": services.cache.usage() if services.cache is not None else {
            "states": len(states), "size_bytes": sum(s.size_bytes for s in states),
            "max_bytes": services.config.get("cache.capacity.max_bytes"),
            "reserve_bytes": services.config.get("cache.capacity.reserve_bytes")},
        "instances": sum(1 for instance in instances if not instance.pooled),
        "pools": services.pool.pools() if services.pool is not None else [],
        "shared_servers": services.databases.hosts() if services.databases is not None else [],
        "warm": services.pool.status() if services.pool is not None else None,
        "warnings": warnings,
    }
    cache = report["cache"]
    if cache.get("max_bytes") and cache["size_bytes"] > cache["max_bytes"]:
        warnings.append(f"the state cache ({cache['size_bytes']} bytes) is over cache.capacity.max_bytes "
                        f"({cache['max_bytes']}): states in use cannot be evicted")
    if with_cache:
        report["cache"]["states_detail"] = services.inventory.list_states()
    return report

