"""Any command as one step (`prepare:exec`): run in the CLI's cwd with the build server's
connection in DATABASE_URL and PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE."""

from __future__ import annotations

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import host_login, read_failure, run_host_command, tool_environment


class ExecExecutor:
    kind = "exec"
    state_kind = StateKind.EXEC

    def apply(self, run: StepRun) -> None:
        host = run.step.run
        assert host is not None
        with host_login(run) as login:
            result = run_host_command(run, host.argv, host.cwd, tool_environment(host.env, login))
        if result.exit_code == 0:
            return
        report = read_failure(result)
        raise StepFailed(
            f"{run.label} failed: the command exited with {result.exit_code}"
            + (f": {report.headline}" if report.headline else ""),
            details={"step": run.index, "source": run.step.source, "command": list(host.argv),
                     "exit_code": result.exit_code, **report.details(), "output": result.output[-8000:]},
        )
