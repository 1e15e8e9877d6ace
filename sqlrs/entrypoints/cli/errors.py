"""CLI-side errors: the engine client's one error class, under the name the CLI modules use.

A one-line message, an optional hint, an exit code (docs/cli.md); the exit codes, and which of the
engine's error codes gives which, are sqlrs.domain.exit_codes' (stdlib only: the hot path imports it).
"""

from __future__ import annotations

from sqlrs.domain.exit_codes import EXIT_BY_CODE, EXIT_ENGINE, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from sqlrs.engine_client.errors import ClientError as CliError
from sqlrs.engine_client.errors import usage

__all__ = ["EXIT_BY_CODE", "EXIT_ENGINE", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_USAGE", "CliError", "usage"]
