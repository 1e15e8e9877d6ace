"""What every command prints with, and the per-invocation context: standard library only, so
the fast path (fast.py) and the Click commands run the same command bodies.

`echo` writes as `click.echo` does for the streams the fast path accepts; once the Click CLI
runs (main.py calls `use_click`), it is `click.echo` itself, so Click keeps its handling of odd
terminals. Errors (the engine client's ClientError, CliError in the CLI modules) carry
the same message, hint and exit code.
"""

from __future__ import annotations

import sys

from sqlrs.domain.sizes import format_size as human_bytes
from sqlrs.engine_client.errors import ClientError

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from sqlrs.engine_client.connection import EngineClient

ERRORS = (ClientError,)  # what a command raises to exit with a message and a code (CliError is its CLI name)
__all__ = ["ERRORS", "Ctx", "Detached", "echo", "emit_json", "fail", "human_bytes", "short", "table", "use_click"]

_click_echo: Callable[..., None] | None = None


def use_click() -> None:
    """From now on print through click.echo (the Click CLI is running)."""
    global _click_echo
    import click

    _click_echo = click.echo


def echo(message: str, err: bool = False) -> None:
    """A line on stdout (or stderr), as click.echo writes it."""
    if _click_echo is not None:
        _click_echo(message, err=err)
        return
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    out = message + "\n"
    if "\x1b" in out and not _isatty(stream):  # click strips ANSI escapes when not on a terminal
        import re

        out = re.sub(r"\033\[[0-?]*[ -/]*[@-~]", "", out)
    stream.write(out)
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def emit_json(data: Any) -> None:
    import json

    echo(json.dumps(data, indent=2, default=str))


def fail(error: ClientError) -> NoReturn:
    """`sqlrs: error: MESSAGE`, the lines under it (a failed step's `LINE n:` and caret, DETAIL,
    HINT, statement: details `context`), `hint: HINT` on stderr; exit with the error's code."""
    echo(f"sqlrs: error: {error.message}", err=True)
    context = error.details.get("context")
    if isinstance(context, list):
        for line in context:
            echo(str(line), err=True)
    if error.hint:
        echo(f"hint: {error.hint}", err=True)
    sys.exit(error.exit_code)


def short(identifier: str | None, n: int = 12) -> str:
    return (identifier or "-")[:n]


def table(rows: list[list[str]], headers: list[str]) -> None:
    """Columns padded to their widest cell, no trailing blanks; nothing at all without rows."""
    if not rows:
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class Ctx:
    """Per-invocation settings shared by the commands: the state directory (a string: no pathlib
    on the fast path; main.Ctx makes it a Path), -q, the engine client (made on first use).

    `workspace` (--workspace) is exported as SQLRS_WORKSPACE, where every reader of inputs finds
    it (sqlrs.engine_client.workspace); `timeout` (--timeout) arms the command's deadline."""

    def __init__(self, state_dir: Any, quiet: bool, workspace: str | None = None, timeout: str | None = None):
        self._state_dir = state_dir
        self.quiet = quiet
        self.workspace = workspace
        self.timeout = timeout
        if workspace:
            import os

            from sqlrs.engine_client.workspace import ENV_WORKSPACE

            os.environ[ENV_WORKSPACE] = os.path.abspath(workspace)
        if timeout:
            arm_deadline(timeout)
        self._client: EngineClient | None = None
        self.composite: Any = None  # set while a composite `prepare:KIND ... run:TOOL` reads its prepare half

    @property
    def state_dir(self) -> Any:
        if self._state_dir is None:
            from sqlrs.paths import default_state_dir_str

            self._state_dir = default_state_dir_str()
        return self._state_dir

    def client(self, spawn: bool = True) -> EngineClient:
        if self._client is None:
            from sqlrs.engine_client.connection import connect

            self._client = connect(self.state_dir, spawn=spawn)
        return self._client

    def note(self, message: str) -> None:
        if not self.quiet:
            echo(message, err=True)


def arm_deadline(text: str) -> None:
    """End the command with TimedOut (exit 1) once `text` (a duration: 30s, 15m, 1h30m) has passed."""
    import signal

    from sqlrs.domain.durations import parse_duration
    from sqlrs.engine_client.errors import TimedOut, usage

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise usage(f"--timeout {text}: expected a duration like 30s, 15m, 1h30m") from None
    if seconds <= 0:
        raise usage(f"--timeout {text}: must be longer than 0")

    def expired(signum: int, frame: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise TimedOut(f"timed out after {text} (--timeout)", hint="give it more time, e.g. --timeout 30m")

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)


class Detached(Exception):
    """The user chose to leave the job running (watching.ask_what_next)."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


def guarded(command: Callable[[], object]) -> None:
    """Run a command as the CLI does: its errors as one line and an exit code, a detach as a
    note and exit 0, Ctrl+C as exit 130, a closed stdout as exit 1; never a traceback."""
    try:
        command()
    except ERRORS as error:
        fail(error)
    except Detached as exc:
        echo(f"detached: job {exc.job_id} keeps running; attach again with: sqlrs watch {exc.job_id}", err=True)
        sys.exit(0)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
