"""Runs: psql or pgbench against an instance, output streamed back as NDJSON lines."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sqlrs.domain.errors import SqlrsError
from sqlrs.entrypoints.engine.http import NDJSON, error_json, ndjson_line, read_json, services
from sqlrs.services.requests import parse_run

log = logging.getLogger("sqlrs.engine")


async def create_run(request: Request) -> Response:
    """Lines `{"stream", "data"}` while the tool runs, `{"warning"}` for what failed after it ran
    (the tool's exit code stands), then `{"exit_code"}` (with `"error"` when the engine could not
    run it); the tool is stopped when the client goes away."""
    svc = services(request)
    run_request = parse_run(await read_json(request))
    instance, _ = await run_in_threadpool(svc.inventory.find_instance, run_request.instance)
    await run_in_threadpool(svc.instances.ensure_running, instance)
    if svc.lifetime is not None:
        svc.lifetime.touch(instance.id)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, None if item is None else ndjson_line(item))

    def on_output(stream: str, data: bytes) -> None:
        put({"stream": stream, "data": data.decode("utf-8", "surrogateescape")})

    def work() -> None:
        try:
            code = svc.runs.run(run_request, on_output, cancel, lambda exc: put({"warning": error_json(exc)}))
            put({"exit_code": code})
        except SqlrsError as exc:
            put({"error": error_json(exc), "exit_code": exc.exit_code})
        except Exception as exc:
            log.exception("run failed")
            put({"error": error_json(exc), "exit_code": 1})
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
