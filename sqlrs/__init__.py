"""sqlrs: disposable PostgreSQL databases built from cached, content-hashed SQL steps.

The Python API (`sqlrs.Client`, `sqlrs.Instance`, ...) lives in `sqlrs.entrypoints.library` and is
imported on first use, so `import sqlrs` stays light (the CLI imports this package on its hot path).
Nothing below the library imports this package: it sits on top of the house (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

# not `from typing import TYPE_CHECKING`: typing costs several ms at every CLI start (mypy knows this spelling)
TYPE_CHECKING = False

__all__ = ["Client", "DowngradeReport", "EngineUnavailable", "Error", "Instance", "NotFoundError", "OperationFailed",
           "RunResult", "State", "UsageError", "__version__"]
_API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from sqlrs.entrypoints.library.client import (
        Client,
        DowngradeReport,
        EngineUnavailable,
        Error,
        Instance,
        NotFoundError,
        OperationFailed,
        RunResult,
        State,
        UsageError,
    )
    from sqlrs.version import __version__


def __getattr__(name: str) -> Any:
    if name in _API:
        from sqlrs.entrypoints.library import client

        return getattr(client, name)
    if name == "__version__":  # (sqlrs.version, read on first use: `import sqlrs` loads no submodule)
        from sqlrs.version import __version__

        return __version__
    raise AttributeError(f"module 'sqlrs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "__version__"])
