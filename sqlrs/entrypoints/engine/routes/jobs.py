"""Jobs: prepare (and plan) jobs, push and pull jobs, their status, events and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sqlrs.domain.errors import UsageError
from sqlrs.domain.model import Job, JobStatus
from sqlrs.domain.scripts import step_inputs
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.entrypoints.engine.http import NDJSON, created, flag, listing, ndjson_line, read_json, respond, services
from sqlrs.entrypoints.engine.routes.instances import default_ttl
from sqlrs.services.jobs import EVENTS_PAGE
from sqlrs.services.requests import parse_prepare, parse_transfer
from sqlrs.services.serde import json_converter

HEARTBEAT_SECONDS = 5.0
COALESCE_AFTER = 0.5  # seconds a stream is open before it reads its job's events in batches
COALESCE_SECONDS = 0.05  # ... at most this much later than they came
TERMINAL = frozenset(status.value for status in JobStatus if status.terminal)


def job_urls(job_id: str) -> dict[str, str]:
    return {"status_url": f"/v1/prepare-jobs/{job_id}", "events_url": f"/v1/prepare-jobs/{job_id}/events"}


def _job_created(job: Job) -> JSONResponse:
    payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}
    return created(payload, payload["status_url"])


def summarize_request(body: dict[str, Any], parsed: Any) -> dict[str, Any]:
    """The request as the job keeps it: steps by source and digest, not megabytes of scripts, and
    by their inputs' digests when they came with content (what `cache explain` compares)."""
    steps = []
    for raw, step in zip(body.get("steps") or [], parsed.steps, strict=False):
        summary: dict[str, Any] = {"kind": step.kind, "source": step.source, "digest": step.content_digest()}
        inputs = step_inputs(raw) if isinstance(raw, dict) else []
        if inputs:
            summary["inputs"] = [list(pair) for pair in inputs]
        steps.append(summary)
    return {**body, "steps": steps}


async def create_job(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request)
    prepare_request = await run_in_threadpool(parse_prepare, body)
    if prepare_request.ttl_seconds is None and not prepare_request.plan_only:
        prepare_request = attrs.evolve(prepare_request,
                                       ttl_seconds=default_ttl(svc, ephemeral=prepare_request.ephemeral))
    # checked (and planned when a step came without content) before anything is queued
    job = await run_in_threadpool(svc.prepare.submit, prepare_request, summarize_request(body, prepare_request))
    if not flag(request, "watch"):
        return _job_created(job)
    # the job id, then its events as /events would stream them: one round trip less
    payload = {"job_id": job.id, "status": job.status.value, **job_urls(job.id)}

    async def created_then_events() -> AsyncIterator[bytes]:
        yield ndjson_line({"type": "created", **payload})
        async for line in stream_events(svc, job.id, 0, True):
            yield line

    return StreamingResponse(created_then_events(), status_code=201, media_type=NDJSON,
                             headers={"Location": payload["status_url"]})


async def list_jobs(request: Request) -> Response:
    return listing(request, await run_in_threadpool(services(request).inventory.list_jobs))


async def get_job(request: Request) -> Response:
    inventory = services(request).inventory
    job = await run_in_threadpool(inventory.find_job, request.path_params["job_id"])
    return respond({**inventory.job_json(job, with_tasks=True), **job_urls(job.id)})


async def cancel_job(request: Request) -> Response:
    svc = services(request)
    job = await run_in_threadpool(svc.inventory.find_job, request.path_params["job_id"])
    accepted = svc.jobs.cancel(job.id)
    return respond({"job_id": job.id, "cancel_requested": accepted, "status": job.status.value},
                   status=202 if accepted else 200)


async def job_events(request: Request) -> Response:
    svc = services(request)
    job = await run_in_threadpool(svc.inventory.find_job, request.path_params["job_id"])
    try:
        after = int(request.query_params.get("after", "0"))
    except ValueError:
        raise UsageError("after takes an event sequence number") from None
    follow = request.query_params.get("follow", "1") not in ("0", "false")
    return StreamingResponse(stream_events(svc, job.id, after, follow), media_type=NDJSON)


async def stream_events(svc: Services, job_id: str, after: int, follow: bool) -> AsyncIterator[bytes]:
    """A job's events after `after`, then (follow) new ones as they come, with a heartbeat line
    when nothing happened for HEARTBEAT_SECONDS; ends once the job is finished."""
    jobs, notifier = svc.jobs, svc.jobs.notifier
    last_beat = opened = time.monotonic()
    while True:
        version = notifier.version(job_id)
        events = await run_in_threadpool(jobs.events_after, job_id, after)
        ended = False
        for event in events:
            after = event.seq
            yield ndjson_line(json_converter.unstructure(event))
            last_beat = time.monotonic()
            ended = ended or (event.type == "status" and event.data.get("status") in TERMINAL)
        if ended:  # its last event
            return
        if len(events) >= EVENTS_PAGE or (events and not follow):
            continue
        # a job running here says so from memory: a build's hundreds of events each woke this
        # loop, and reading the job's record (its plan, as JSON) each time took the GIL from it;
        # an event that came meanwhile moved the version, so the wait below returns at once
        if not follow or not jobs.running(job_id):
            if events:
                continue
            job = await run_in_threadpool(jobs.get_job, job_id)
            if job is None or job.status.terminal or not follow:
                return
        if events and time.monotonic() - opened >= COALESCE_AFTER:
            # a long job's steps come by the hundred: read them a few times a second, not once
            # each (every read competes with the build for the GIL); a hit ends before this
            await asyncio.sleep(COALESCE_SECONDS)
        await notifier.wait(job_id, version, max(0.05, HEARTBEAT_SECONDS - (time.monotonic() - last_beat)))
        if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
            yield ndjson_line({"type": "heartbeat", "seq": after})
            last_beat = time.monotonic()


# -- push and pull: jobs whose events and status live with the prepare jobs' ----------------------

async def create_push_job(request: Request) -> Response:
    svc = services(request)
    body = parse_transfer(await read_json(request), "state")
    svc.registry.check_name(body.get("runtime"))
    state = await run_in_threadpool(svc.inventory.state_of, body["state"])
    target = body.get("target")
    if target:  # a malformed reference is the caller's mistake, not a failed job
        from sqlrs.domain.remote import parse_ref

        parse_ref(target)
    job = svc.jobs.submit("push", {**body, "state": state.id},
                          lambda ctx: svc.pusher.push(ctx, state, target, image=body.get("image")))
    return _job_created(job)


async def create_pull_job(request: Request) -> Response:
    svc = services(request)
    body = parse_transfer(await read_json(request), "ref")
    svc.registry.check_name(body.get("runtime"))
    job = svc.jobs.submit("pull", body, lambda ctx: svc.puller.pull(ctx, body["ref"], body.get("runtime"),
                                                                    body.get("image")))
    return _job_created(job)

