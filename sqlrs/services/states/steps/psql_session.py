"""One psql for the consecutive `-f` steps of a build, where the runtime's tools are host processes.

A step is its own `psql -f FILE` (SPEC §5): a session of its own, psql's variables as the command
line sets them. Starting psql costs 15-40 ms, more than most migrations of a real history take, so
a build keeps one psql open (reading its stdin, `HostTools.tool_command`) and gives it each step
as `\\i FILE`. Before every step but the first, the server session is made new again: an open
transaction is rolled back (as psql's exit does) and `DISCARD ALL` drops what a session keeps
(SET and SET ROLE, temporary tables, prepared statements, cursors, advisory locks, LISTEN), so no
step sees those of the one before. That costs a round trip where a `\\connect` costs a new
backend (~4 ms each, a third of a plain replay of lemmy's 247 migrations). Only after a step that
changes what a *new* session starts with (`ALTER DATABASE|ROLE|USER ... SET`, which DISCARD's
RESET ALL does not apply) does the next step get a `\\connect`. psql's errors, `file:line` and
exit code (3 with ON_ERROR_STOP) are those of `-f`.

What a session cannot give is a fresh set of psql variables and settings per step, so a step
runs in it only when every meta-command in its files is one that leaves psql as it was
(`SESSION_SAFE`); anything else (`\\set`, `\\gset`, `\\pset`, `\\o`, `\\c`, `\\if`, ...),
a `-c` step and `-1` run as a psql of their own, as before. A backslash in a string literal
(`E'\\n'`) can make a step look unsafe: it then only runs the slower way.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence

from sqlrs.domain.steps import PsqlOptions, Step
from sqlrs.ports.runtime import HostTools
from sqlrs.services.instances.scripts import psql_quote
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import HostSession, ToolResult

# meta-commands that change nothing psql keeps between statements (variables, output, connection)
SESSION_SAFE = frozenset({"i", "ir", "include", "include_relative", "echo", "qecho", "warn", "copy",
                          "g", "gx", "gexec"})
META_COMMAND = re.compile(r"\\([A-Za-z_]+)")
SESSION_KEY = "psql"
# what a new session starts with, set for the database or a role: the next step needs a new connection
SESSION_DEFAULTS = re.compile(r"\bALTER\s+(DATABASE|ROLE|USER)\b", re.IGNORECASE)
# the server session made new without a new connection. QUIET: no command tags (psql -f prints no
# such lines); client_min_messages: no WARNING for a ROLLBACK outside a transaction (DISCARD's
# RESET ALL puts it back)
RENEW = "\\set QUIET on\nSET client_min_messages = error;\nROLLBACK;\nDISCARD ALL;\n\\set QUIET off\n"
RECONNECT = "\\set QUIET on\n\\connect\n\\set QUIET off\n"


def session_safe(step: Step, options: PsqlOptions) -> bool:
    """Whether the step gives the same result in the build's psql session as in a psql of its own."""
    if step.kind != "file" or options.single_transaction or not step.files:
        return False
    return all(match.group(1) in SESSION_SAFE
               for script in step.files for match in META_COMMAND.finditer(script.content))


def _as_is(text: str) -> str:
    return text


class PsqlSession:
    """The build's psql (see the module docstring); started with the first step that can use it,
    started again when the build server changed (a restart after a checkpoint)."""

    reusable = False  # its server is this build's

    def __init__(self, host: HostSession, key: str, mark: str):
        self.host = host
        self.key = key  # the server and psql's arguments it was started for
        self.mark = mark
        self.steps = 0
        self.reconnect = False  # the step before set what a new session starts with
        self.sent: int | None = None  # the step sent and not yet answered (PsqlExecutor.send_ahead)
        self.humanize: Callable[[str], str] = _as_is  # that step's output with the user's paths

    @classmethod
    def existing(cls, run: StepRun, args: Sequence[str], env: dict[str, str]) -> PsqlSession | None:
        """The build's running session for `args` against the step's server, if there is one."""
        session = run.sessions.get(SESSION_KEY)
        if isinstance(session, cls) and session.key == cls._key(run, args, env) and session.host.alive:
            return session
        return None

    @classmethod
    def sent_ahead(cls, run: StepRun) -> PsqlSession | None:
        """The session this step was sent to ahead (PsqlExecutor.send_ahead), running or not: a
        step that failed at once has ended psql by the time its answer is read, and must not be
        sent again to a new one."""
        session = run.sessions.get(SESSION_KEY)
        return session if isinstance(session, cls) and session.sent == run.index else None

    @staticmethod
    def _key(run: StepRun, args: Sequence[str], env: dict[str, str]) -> str:
        return json.dumps([run.server.spec.port, run.server.ref, list(args), sorted(env.items())])

    @classmethod
    def kept(cls, run: StepRun, args: Sequence[str], env: dict[str, str]) -> PsqlSession | None:
        """The build's session for `args` against the step's server, or None when the runtime
        cannot run psql as a host process."""
        runtime = run.server.runtime
        if not isinstance(runtime, HostTools):
            return None
        key = cls._key(run, args, env)
        running = cls.existing(run, args, env)
        if running is not None:
            return running
        other = run.sessions.pop(SESSION_KEY, None)
        if other is not None:
            other.close()
        command = runtime.tool_command(run.server.spec, "psql", args, env)
        if command is None:
            return None
        mark = f"__sqlrs_step_done_{secrets.token_hex(8)}__"
        made = cls(HostSession(run, command.argv, command.cwd, command.env, mark), key, mark)
        run.sessions[SESSION_KEY] = made
        return made

    def apply(self, run: StepRun, entry: str, log: Callable[[str, str], None]) -> ToolResult:
        """Run the file `entry` (as psql sees it) as the next step; psql's exit code when it
        stopped on an error, else 0."""
        self.send(run, entry)
        return self.receive(run, log)

    def send(self, run: StepRun, entry: str, humanize: Callable[[str], str] = _as_is) -> None:
        """Give psql the step (the file `entry`) without waiting for it (`receive` does);
        `humanize` puts the user's paths back into its output."""
        reset = "" if not self.steps else RECONNECT if self.reconnect else RENEW
        self.steps += 1
        self.reconnect = any(SESSION_DEFAULTS.search(script.content) for script in run.step.files)
        self.sent, self.humanize = run.index, humanize
        self.host.send(f"{reset}\\i {psql_quote(entry)}\n\\echo {self.mark}0\n\\warn {self.mark}0")

    def receive(self, run: StepRun, log: Callable[[str, str], None]) -> ToolResult:
        """How the step sent last ended: psql's exit code when it stopped on an error, else 0."""
        self.sent = None
        return self.host.receive(run, log)

    @property
    def alive(self) -> bool:
        return self.host.alive

    def close(self) -> None:
        self.host.close()
