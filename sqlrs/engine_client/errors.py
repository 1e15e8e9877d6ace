"""The error every engine-client call raises: a one-line message, an optional hint, the exit
code the CLI exits with (0 ok, 1 failed, 2 usage, 3 engine unreachable/incompatible, 4 not
found) and, for errors the engine reported, its error `code` and `details`.

The CLI prints it as `sqlrs: error: ...` + `hint: ...`; the library turns it into its public
exception classes (sqlrs.entrypoints.library.client) by exit code.
"""

from __future__ import annotations

from sqlrs.domain.exit_codes import EXIT_BY_CODE, EXIT_ENGINE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, exit_code_for

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXIT_BY_CODE", "EXIT_ENGINE", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_USAGE", "ClientError",
           "TimedOut", "raise_engine_error", "usage"]


class ClientError(Exception):
    """Anything a client-side operation refused or the engine answered with an error."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, hint: str | None = None,
                 details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.hint = hint
        self.details = details or {}

    @classmethod
    def from_engine(cls, error: dict[str, Any], status: int | None = None) -> ClientError:
        """The engine's JSON error `{code, message, details}` (details.hint becomes the hint)."""
        code = str(error.get("code", "failed"))
        details = dict(error.get("details") or {})
        hint = details.pop("hint", None)
        exit_code = exit_code_for(code)
        if code == "ambiguous" and details.get("candidates"):
            hint = "candidates: " + ", ".join(details["candidates"])
        return cls(str(error.get("message", "engine error")), exit_code, hint, details, code)


class TimedOut(ClientError):
    """The command ran out of the time `--timeout` gave it (exit 1); a job it followed is cancelled."""


def usage(message: str, hint: str | None = None) -> ClientError:
    """A usage error (exit 2): bad arguments, a missing file, a refused flag."""
    return ClientError(message, EXIT_USAGE, hint)


def raise_engine_error(status: int, data: Any) -> None:
    """Raise the error an engine answer with HTTP `status` and JSON body `data` stands for."""
    if isinstance(data, dict) and "code" in data:
        raise ClientError.from_engine(data, status)
    raise ClientError(f"engine answered HTTP {status}", EXIT_ENGINE)
