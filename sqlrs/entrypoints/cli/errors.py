"""CLI-side errors: a one-line message, an optional hint, an exit code (SPEC section 3)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

EXIT_FAILED, EXIT_USAGE, EXIT_ENGINE, EXIT_NOT_FOUND = 1, 2, 3, 4

# engine error codes -> CLI exit codes
EXIT_BY_CODE = {
    "invalid_argument": EXIT_USAGE,
    "ambiguous": EXIT_USAGE,
    "not_found": EXIT_NOT_FOUND,
    "unauthorized": EXIT_ENGINE,
    "incompatible_version": EXIT_ENGINE,
}


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
        exit_code = EXIT_BY_CODE.get(code, EXIT_FAILED)
        if code == "ambiguous" and details.get("candidates"):
            hint = "candidates: " + ", ".join(details["candidates"])
        return cls(str(error.get("message", "engine error")), exit_code, hint, details, code)


def usage(message: str, hint: str | None = None) -> CliError:
    return CliError(message, EXIT_USAGE, hint)
