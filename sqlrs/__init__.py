"""sqlrs: disposable PostgreSQL databases built from cached, content-hashed SQL steps.

The Python API (`sqlrs.Client`, `sqlrs.Instance`, ...) lives in `sqlrs.client` and is imported
on first use, so `import sqlrs` stays light (the CLI imports this package on its hot path).
"""

from __future__ import annotations

# not `from typing import TYPE_CHECKING`: typing costs several ms at every CLI start (mypy knows this spelling)
TYPE_CHECKING = False
__version__ = "0.1.0"

__all__ = ["Client", "DowngradeReport", "EngineUnavailable", "Error", "Instance", "NotFoundError", "OperationFailed",
           "RunResult", "State", "UsageError", "__version__"]
_API = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from sqlrs.client import (
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


def __getattr__(name: str) -> Any:
    if name in _API:
        from sqlrs import client

        return getattr(client, name)
    raise AttributeError(f"module 'sqlrs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
