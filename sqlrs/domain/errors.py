"""Errors that carry a stable code, an HTTP status and a CLI exit code: the one hierarchy.

Every layer raises these; the engine turns them into JSON `{code, message, details}`
(sqlrs/entrypoints/engine/http.py) and the CLI into a one-line message and an exit code. A
class's exit code is the one sqlrs.domain.exit_codes gives its `code` (the same table the CLI
reads the engine's JSON errors with), so the two cannot disagree.
"""

from __future__ import annotations

import errno

from sqlrs.domain.exit_codes import (
    EXIT_BY_CODE,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    exit_code_for,
)

TYPE_CHECKING = False  # not `from typing import`: the CLI imports this module (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["EXIT_BY_CODE", "EXIT_ENGINE", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "Ambiguous",
           "Cancelled", "Conflict", "ContentRequired", "InUse", "Incompatible", "Internal", "NoSpace", "NotFound",
           "RuntimeFailure", "RuntimeUnavailable", "SqlrsError", "StepFailed", "StoreFailure", "Unauthorized",
           "UsageError", "filesystem_full", "no_space_for"]


class SqlrsError(Exception):
    """Base of all expected errors; never shown to users as a traceback."""

    code: ClassVar[str] = "failed"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = EXIT_FAILED  # a subclass's: exit_code_for(its code)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.exit_code = exit_code_for(cls.code)

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


class NotFound(SqlrsError):
    """A named or identified object does not exist."""

    code = "not_found"
    http_status = 404


class Ambiguous(SqlrsError):
    """An abbreviated id matches more than one object."""

    code = "ambiguous"
    http_status = 409


class Conflict(SqlrsError):
    """The operation clashes with the current state (dependents, a running job, a taken name)."""

    code = "conflict"
    http_status = 409


class InUse(Conflict):
    """Clients are connected to the instance to remove (`details.clients` lists them)."""

    code = "in_use"


class StepFailed(SqlrsError):
    """A psql step exited non-zero while building a state."""

    code = "step_failed"
    http_status = 422


class RuntimeUnavailable(SqlrsError):
    """The requested runtime (docker, podman, native) cannot be used."""

    code = "runtime_unavailable"
    http_status = 503


class RuntimeFailure(SqlrsError):
    """The runtime failed while starting, stopping or executing in an instance."""

    code = "runtime_failure"
    http_status = 500


class StoreFailure(SqlrsError):
    """The snapshot store could not create, clone or delete a volume."""

    code = "store_failure"
    http_status = 500


class NoSpace(SqlrsError):
    """The cache is full and nothing can be evicted."""

    code = "no_space"
    http_status = 507


def filesystem_full(state_dir: str) -> NoSpace:
    """NoSpace for a write that failed because the state directory's filesystem is full."""
    return NoSpace(f"the state directory's filesystem is full ({state_dir})",
                   hint=f"free space on it (df -h {state_dir}), then run the command again")


def no_space_for(exc: BaseException) -> NoSpace | None:
    """NoSpace for an OSError ENOSPC or EDQUOT raised anywhere; None for any other error."""
    if not (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
        return None
    where = f": cannot write {exc.filename}" if exc.filename else ""
    return NoSpace(f"the filesystem is full{where}", hint="free space on it (df -h), then run the command again")


class Cancelled(SqlrsError):
    """The job was cancelled by a user."""

    code = "cancelled"
    http_status = 409


class ContentRequired(SqlrsError):
    """A step sent as a digest only must be built: the client has to send its content."""

    code = "content_required"
    http_status = 409


class Unauthorized(SqlrsError):
    """The request carried no bearer token, or not the engine's (the token is in engine.json)."""

    code = "unauthorized"
    http_status = 401


class Incompatible(SqlrsError):
    """The client's major version differs from the engine's."""

    code = "incompatible_version"
    http_status = 409


class Internal(SqlrsError):
    """A bug: anything raised that is not a SqlrsError (the traceback goes to engine.log)."""

    code = "internal"
    http_status = 500


class Interrupted(SqlrsError):
    """The engine stopped (or died) while the job ran; found so by the next engine's recovery."""

    code = "interrupted"
    http_status = 500
