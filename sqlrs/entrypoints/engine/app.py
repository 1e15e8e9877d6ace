"""The engine's HTTP API as a Starlette application: the route table (routes/), the bearer-token
and version guard, the background services' lifespan. docs/architecture.md describes the API;
openapi.json (made by openapi.py) is its contract."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from sqlrs import __version__
from sqlrs.domain.errors import Incompatible, Unauthorized
from sqlrs.entrypoints.engine.bootstrap import Services, check_runtimes
from sqlrs.entrypoints.engine.http import EXCEPTION_HANDLERS, error_response
from sqlrs.entrypoints.engine.routes import ROUTES
from sqlrs.entrypoints.engine.state import EngineState

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
                refused = Unauthorized("missing or wrong bearer token",
                                       hint="the token is in engine.json in the state directory")
                await error_response(refused)(scope, receive, send)
                return
            client_version = headers.get("x-sqlrs-version")
            if client_version and path not in VERSION_EXEMPT \
                    and client_version.split(".")[0] != __version__.split(".")[0]:
                incompatible = Incompatible(f"engine {__version__} cannot serve CLI {client_version}",
                                            hint="restart the engine with: sqlrs engine stop")
                await error_response(incompatible)(scope, receive, send)
                return
        self.state.in_flight += 1
        self.state.last_activity = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1
            self.state.last_activity = time.monotonic()


def create_app(services: Services, token: str, instance_id: str) -> tuple[Starlette, EngineState]:
    """The engine's ASGI app (guarded) and its state; handlers find both on `app.state`."""
    state = EngineState(services, token, instance_id)

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
            if services.servers.standby is not None:
                await run_in_threadpool(services.servers.standby.close)
            await run_in_threadpool(services.runners.close)

    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.services = services
    app.state.engine = state
    return GuardMiddleware(app, state), state  # type: ignore[return-value]
