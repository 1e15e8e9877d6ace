"""One psql for the consecutive `-f` steps of a build, where the runtime's tools are host processes.

A step is its own `psql -f FILE` (SPEC §5): a session of its own, psql's variables as the command
line sets them. Starting psql costs 15-40 ms, more than most migrations of a real history take, so
a build keeps one psql open (reading its stdin, `HostTools.tool_command`) and gives it each step
as `\\i FILE`, with a `\\connect` before every step but the first: a new server session, so no
SET, temporary table, prepared statement or open transaction of one step is seen by the next
(the closed connection rolls an open one back, as psql's exit does). psql's errors, `file:line`
and exit code (3 with ON_ERROR_STOP) are those of `-f`.

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


def session_safe(step: Step, options: PsqlOptions) -> bool:
    """Whether the step gives the same result in the build's psql session as in a psql of its own."""
    if step.kind != "file" or options.single_transaction or not step.files:
        return False
    return all(match.group(1) in SESSION_SAFE
               for script in step.files for match in META_COMMAND.finditer(script.content))


class PsqlSession:
    """The build's psql (see the module docstring); started with the first step that can use it,
    started again when the build server changed (a restart after a checkpoint)."""

    def __init__(self, host: HostSession, key: str, mark: str):
        self.host = host
        self.key = key  # the server and psql's arguments it was started for
        self.mark = mark
        self.steps = 0

    @classmethod
    def kept(cls, run: StepRun, args: Sequence[str], env: dict[str, str]) -> PsqlSession | None:
        """The build's session for `args` against the step's server, or None when the runtime
        cannot run psql as a host process."""
        runtime = run.server.runtime
        if not isinstance(runtime, HostTools):
            return None
        key = json.dumps([run.server.spec.port, run.server.ref, list(args), sorted(env.items())])
        session = run.sessions.get(SESSION_KEY)
        if isinstance(session, cls) and session.key == key and session.host.alive:
            return session
        if session is not None:
            session.close()
            del run.sessions[SESSION_KEY]
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
        # QUIET: \connect says nothing (psql -f prints no such line either)
        reset = "\\set QUIET on\n\\connect\n\\set QUIET off\n" if self.steps else ""
        self.steps += 1
        return self.host.request(run, f"{reset}\\i {psql_quote(entry)}\n\\echo {self.mark}0\n\\warn {self.mark}0",
                                 log)

    def close(self) -> None:
        self.host.close()
