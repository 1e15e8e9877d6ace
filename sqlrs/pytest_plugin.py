"""`from sqlrs.pytest_plugin import assert_downgrades_restore, assert_backwards_restore`
(docs/python-api.md): the pytest plugin itself is sqlrs.entrypoints.pytest.plugin (entry point
`pytest11`)."""

from sqlrs.entrypoints.pytest.plugin import assert_backwards_restore, assert_downgrades_restore

__all__ = ["assert_backwards_restore", "assert_downgrades_restore"]
