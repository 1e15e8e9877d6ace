"""The fault suite uses the end-to-end fixtures (tests/integration/fixtures.py)."""

from fixtures import sqlrs_native, workspace

__all__ = ["sqlrs_native", "workspace"]
