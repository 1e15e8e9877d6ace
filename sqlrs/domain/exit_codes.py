"""The CLI's exit codes and the one table that maps the engine's error codes onto them.

sqlrs.domain.errors gives every error class the exit code this table gives its `code`; the CLI
looks up the `code` of the engine's JSON errors here. Kept apart from the error classes, stdlib
only and without `typing`: the CLI's hot path imports it (docs/cli.md lists the exit codes).
"""

EXIT_OK = 0
EXIT_FAILED = 1  # the default: any code not listed below
EXIT_USAGE = 2
EXIT_ENGINE = 3  # the engine is unreachable, refuses the token, or is of another major version
EXIT_NOT_FOUND = 4

EXIT_BY_CODE = {
    "invalid_argument": EXIT_USAGE,
    "ambiguous": EXIT_USAGE,
    "not_found": EXIT_NOT_FOUND,
    "unauthorized": EXIT_ENGINE,
    "incompatible_version": EXIT_ENGINE,
}


def exit_code_for(code: str) -> int:
    """The CLI's exit code for an error `code` of the engine's JSON."""
    return EXIT_BY_CODE.get(code, EXIT_FAILED)
