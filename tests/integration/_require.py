"""Skip or fail tests whose runtime (or backend) is unavailable: `SQLRS_REQUIRE` (sqlrs.testing.require)."""

from __future__ import annotations

from sqlrs.testing.require import ENV, is_required, require, required, unavailable

__all__ = ["ENV", "is_required", "require", "required", "unavailable"]
