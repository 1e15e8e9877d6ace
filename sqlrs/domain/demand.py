"""Demand as the warm instances and the database copies ahead measure it: claims in a recent window."""

from __future__ import annotations

from collections import deque


def recent(claims: deque[float], now: float, window: float) -> int:
    """Forget the claim times (oldest first) older than `window` seconds before `now`; how many remain."""
    while claims and claims[0] < now - window:
        claims.popleft()
    return len(claims)
