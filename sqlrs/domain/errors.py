"""Errors that carry a stable code, an HTTP status and a CLI exit code.

Every layer raises these; the engine turns them into JSON `{code, message, details}` and the CLI
into a one-line message and an exit code (SPEC section 3).
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_NOT_FOUND = 4


class SqlrsError(Exception):
    """Base of all expected errors; never shown to users as a traceback."""

    code: ClassVar[str] = "failed"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.hint:
            details.setdefault("hint", self.hint)
        return {"code": self.code, "message": self.message, "details": details}


class UsageError(SqlrsError):
    """The request itself is malformed or contradictory."""

    code = "invalid_argument"
    http_status = 400
    exit_code = EXIT_USAGE


class NotFound(SqlrsError):
    """A named or identified object does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = EXIT_NOT_FOUND


class Ambiguous(SqlrsError):
    """An abbreviated id matches more than one object."""

    code = "ambiguous"
    http_status = 409
    exit_code = EXIT_USAGE


class Conflict(SqlrsError):
    """The operation clashes with the current state (dependents, a running job, a taken name)."""

    code = "conflict"
    http_status = 409
    exit_code = EXIT_FAILED


class InUse(Conflict):
    """Clients are connected to the instance to remove (`details.clients` lists them)."""

    code = "in_use"


class StepFailed(SqlrsError):
    """A psql step exited non-zero while building a state."""

    code = "step_failed"
    http_status = 422
    exit_code = EXIT_FAILED


class RuntimeUnavailable(SqlrsError):
    """The requested runtime (docker, podman, native) cannot be used."""

    code = "runtime_unavailable"
    http_status = 503
    exit_code = EXIT_FAILED


class RuntimeFailure(SqlrsError):
    """The runtime failed while starting, stopping or executing in an instance."""

    code = "runtime_failure"
    http_status = 500
    exit_code = EXIT_FAILED


class StoreFailure(SqlrsError):
    """The snapshot store could not create, clone or delete a volume."""

    code = "store_failure"
    http_status = 500
    exit_code = EXIT_FAILED


class NoSpace(SqlrsError):
    """The cache is full and nothing can be evicted."""

    code = "no_space"
    http_status = 507
    exit_code = EXIT_FAILED


class Cancelled(SqlrsError):
    """The job was cancelled by a user."""

    code = "cancelled"
    http_status = 409
    exit_code = EXIT_FAILED


class ContentRequired(SqlrsError):
    """A step sent as a digest only must be built: the client has to send its content."""

    code = "content_required"
    http_status = 409
    exit_code = EXIT_FAILED


class Unauthorized(SqlrsError):
    code = "unauthorized"
    http_status = 401
    exit_code = EXIT_ENGINE


class Incompatible(SqlrsError):
    code = "incompatible_version"
    http_status = 409
    exit_code = EXIT_ENGINE
