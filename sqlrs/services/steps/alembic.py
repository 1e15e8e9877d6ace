"""Alembic revisions: one step per revision, applied by the user's own Alembic.

The engine does not import Alembic or the user's project. It runs the runner program
(sqlrs.changelogs.alembic_runner) with the Python the CLI runs on (where the user's project, its
Alembic and its driver are installed), in the CLI's working directory, with the CLI's
environment and the build server's URL in DATABASE_URL.
"""

from __future__ import annotations

from sqlrs.changelogs.alembic_runner import UPGRADE, error_of, runner_argv
from sqlrs.domain.errors import StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.services.steps.base import StepRun
from sqlrs.services.steps.host import host_login, run_host_command, tool_environment


class AlembicExecutor:
    kind = "alembic"
    state_kind = StateKind.ALEMBIC

    def apply(self, run: StepRun) -> None:
        host = run.step.run
        assert host is not None
        config, revision, path = host.param("config"), host.param("revision"), host.param("file") or "?"
        if not config or not revision:
            raise StepFailed(f"{run.label}: an alembic step names its config and revision")
        with host_login(run) as login:
            result = run_host_command(run, runner_argv(host.argv[0], config, UPGRADE, revision), host.cwd,
                                      tool_environment(host.env, login))
        if result.exit_code == 0:
            return
        error = error_of(result.output) or result.last_line() or f"exited with {result.exit_code}"
        raise StepFailed(
            f"{run.label} failed: revision {revision} ({path}): {error}",
            details={"step": run.index, "source": run.step.source, "revision": revision, "file": path,
                     "exit_code": result.exit_code, "error": error, "output": result.output[-8000:]},
        )
