"""CLI-side errors: a one-line message, an optional hint, an exit code (docs/cli.md).

The exit codes, and which of the engine's error codes gives which, are sqlrs.domain.exit_codes':
the table the engine's error classes take theirs from (stdlib only: the hot path imports it).
"""

from __future__ import annotations

from sqlrs.domain.exit_codes import EXIT_BY_CODE, EXIT_ENGINE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, exit_code_for

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EXIT_BY_CODE", "EXIT_ENGINE", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_USAGE", "CliError", "usage"]


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED, hint: str | None = None,
                 details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.hint = hint
        self.details = details or {}

    @classmethod
    def from_engine(cls, error: dict[str, Any], status: int | None = None) -> CliError:
        code = str(error.get("code", "failed"))
        details = dict(error.get("details") or {})
        hint = details.pop("hint", None)
        exit_code = exit_code_for(code)
        if code == "ambiguous" and details.get("candidates"):
            hint = "candidates: " + ", ".join(details["candidates"])
        return cls(str(error.get("message", "engine error")), exit_code, hint, details, code)


def usage(message: str, hint: str | None = None) -> CliError:
    return CliError(message, EXIT_USAGE, hint)
