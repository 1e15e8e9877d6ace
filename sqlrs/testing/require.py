"""Skip or fail tests whose runtime (or store) is unavailable here.

`SQLRS_REQUIRE` is a comma-separated list of names (e.g. `docker,podman,native,btrfs`) that must
be available: a test needing one of them FAILS when it is not, instead of being skipped. CI sets
it so that a broken daemon or a missing test image cannot turn the suite green by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ENV = "SQLRS_REQUIRE"


def required() -> frozenset[str]:
    """The names listed in SQLRS_REQUIRE (lower-cased; `all` is not special)."""
    raw = os.environ.get(ENV, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def is_required(name: str) -> bool:
    return name.lower() in required()


def require(name: str, available: bool, reason: str) -> None:
    """Return when `available`; else fail if SQLRS_REQUIRE names `name`, skip otherwise."""
    if not available:
        unavailable(name, reason)


def unavailable(name: str, reason: str) -> NoReturn:
    """Fail if SQLRS_REQUIRE names `name`, skip otherwise."""
    if is_required(name):
        pytest.fail(
            f"{name} is required ({ENV}={os.environ.get(ENV, '')}) but unavailable: {reason}", pytrace=False
        )
    pytest.skip(f"{name} unavailable: {reason}")
