"""What the engine's HTTP layer tracks about itself (`EngineState`): its identity, activity for the
idle timer, the shutdown event. app.py makes it; http.py and the routes read it from the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlrs.entrypoints.engine.bootstrap import Services


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
        # called on a wrong token: the engine writes engine.json again if it no longer names it
        # (replaced or removed by someone), so the client's rediscovery finds the right token
        self.republish: Callable[[], None] = lambda: None

    def busy(self) -> bool:
        # instances with a TTL keep the engine up: nobody else would remove them when they expire
        lifetime = self.services.lifetime
        databases = self.services.databases  # shared servers are stopped by this engine once idle
        return (self.in_flight > 0 or self.services.jobs.active() > 0 or (lifetime is not None and lifetime.pending())
                or (databases is not None and databases.pending()))
