"""psql steps (`-f FILE`, `-c SQL`): real psql, run where the build server runs, with `-X`, the
request's `-v` variables, `ON_ERROR_STOP=1` and `-1` when asked, as the chain's bootstrap
superuser. The scripts are written where psql can read them (services/instances/scripts.py); its
error comes back as psql printed it, with the user's paths in it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.instances.scripts import Materialized, command_args, first_error, materialize
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.output import OutputCollector
from sqlrs.services.states.steps.psql_session import PsqlSession, session_safe


class PsqlExecutor:
    kinds = ("file", "command")  # sqlrs.domain.steps.PSQL_KINDS
    kind = "file"
    state_kind = StateKind.PSQL

    @staticmethod
    def _psql(run: StepRun) -> tuple[list[str], dict[str, str]]:
        """psql's arguments (before the script's) and environment for the step."""
        args = ["-X"]
        for name, value in run.options.variables:
            args += ["-v", f"{name}={value}"]
        args += ["-v", "ON_ERROR_STOP=1"]
        if run.options.single_transaction:
            args.append("-1")
        return args, {"PGUSER": run.superuser}

    def send_ahead(self, run: StepRun) -> bool:
        """Give the build's psql this step now, while the build records the one before (its task
        row, its event): psql starts it without waiting for those. Only a step the session runs,
        once the session runs; True when sent (`apply` then only waits for it)."""
        if run.step.kind != "file" or not session_safe(run.step, run.options):
            return False
        session = PsqlSession.existing(run, *self._psql(run))
        if session is None or session.sent is not None:
            return False
        materialized = self._materialize(run)
        session.send(run, materialized.entry, materialized.humanize)
        return True

    @staticmethod
    def _materialize(run: StepRun) -> Materialized:
        """The step's files where psql reads them (services/instances/scripts.py)."""
        server = run.server
        return materialize(run.step, server.spec.scripts_dir / f"step{run.index}",
                           lambda path: server.runtime.tool_path(server.spec, path))

    def apply(self, run: StepRun) -> None:
        server, step, options = run.server, run.step, run.options
        ahead = PsqlSession.sent_ahead(run)
        if ahead is not None:  # its answer is all there is to wait for, even if psql exited on it
            sent = ahead.humanize
            result = ahead.receive(run, lambda stream, text: run.log(stream, sent(text)))
            self._check(run, result.exit_code, result.output, sent)
            return
        args, env = self._psql(run)
        humanize: Callable[[str], str] = lambda text: text  # noqa: E731
        session = PsqlSession.kept(run, args, env) if session_safe(step, options) else None
        if step.kind == "file":
            materialized = self._materialize(run)
            humanize = materialized.humanize
            args += ["-f", materialized.entry]
        else:  # -c, or a script that sends the SQL as -c does when it is too long for an argument
            command, humanize = command_args(step.sql or "", server.spec.scripts_dir / f"step{run.index}",
                                             lambda path: server.runtime.tool_path(server.spec, path))
            args += command
        if session is not None:  # the build's psql: `\i` of the same file
            result = session.apply(run, materialized.entry, lambda stream, text: run.log(stream, humanize(text)))
            code, text = result.exit_code, result.output
        else:
            collected = OutputCollector(lambda stream, text: run.log(stream, humanize(text)))
            code = server.runtime.exec_tool(server.spec, server.ref, "psql", args, collected.feed, run.ctx.cancel,
                                            env=env)
            collected.flush()
            text = collected.text()
        self._check(run, code, text, humanize)

    @staticmethod
    def _check(run: StepRun, code: int, text: str, humanize: Callable[[str], str]) -> None:
        """Raise StepFailed (psql's error, at the user's file and line) unless psql exited with 0."""
        step = run.step
        run.ctx.check_cancel()
        if code != 0:
            output = humanize(text)
            error = first_error(output)
            where = ""
            if error is not None and error.file:
                where = f" at {error.file}:{error.line}"
            message = error.message.splitlines()[0] if error else f"psql exited with {code}"
            raise StepFailed(
                f"{run.label} failed{where}: {message}",
                details={"step": run.index, "source": step.source, "file": error.file if error else None,
                         "line": error.line if error else None, "exit_code": code,
                         "psql_error": error.message if error else None,
                         "context": error.message.splitlines()[1:] if error else [], "output": output[-8000:]},
            )
