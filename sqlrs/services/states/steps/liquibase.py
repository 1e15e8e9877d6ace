"""Liquibase changesets (`prepare:lb`): one step per changeset, applied by a real Liquibase 4.x.

The CLI read the changelogs and keyed each changeset (sqlrs.changelogs.liquibase). To apply one,
the engine reads them again from the search path, checks the changeset is still what was keyed,
writes the changelog tree with every other changeset removed into the build server's run
directory, and runs a plain `liquibase update` there against the build server (the state of the
previous changeset): Liquibase applies that changeset, or skips it exactly where a plain update
of the whole changelog would (contexts, labels, preconditions), and records it in
DATABASECHANGELOG under the same FILENAME, since the tree keeps its logical paths.

The connection goes through LIQUIBASE_COMMAND_* variables (not argv, which `ps` shows); every
other LIQUIBASE_* variable of the caller is dropped, as it could change the result unkeyed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlrs.changelogs import liquibase as changelogs
from sqlrs.domain.errors import StepFailed, UsageError
from sqlrs.domain.model import StateKind
from sqlrs.ports.tools import LiquibaseLauncher
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import host_login, run_host_command, tool_environment


def liquibase_error(output: str) -> str:
    """Liquibase's own one-line reason from its output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("Reason:", "Exception Primary Reason:", "Unexpected error running Liquibase:"):
        for line in reversed(lines):
            if marker in line:
                reason = line.split(marker, 1)[1].strip()
                if reason.startswith("liquibase.exception.") and ": " in reason:
                    reason = reason.split(": ", 1)[1]
                if reason:
                    return reason
    return lines[-1] if lines else ""


class LiquibaseExecutor:
    kind = "liquibase"
    state_kind = StateKind.LIQUIBASE

    def __init__(self) -> None:
        # the installation's adapter, given by the composition root (steps.use_liquibase)
        self.install: LiquibaseLauncher | None = None

    def apply(self, run: StepRun) -> None:
        install = self.install
        if install is None:
            raise StepFailed(f"{run.label} failed: this engine has no Liquibase launcher wired")
        host = run.step.run
        assert host is not None
        param = host.param
        search_path, root = param("search_path") or "", param("changelog") or ""
        file, ordinal, digest = param("file") or "", int(param("ordinal") or 0), param("digest")
        ident, author = param("id") or "", param("author") or ""
        what = f"changeset {ident} by {author} ({file})"
        details = {"step": run.index, "source": run.step.source, "changeset": ident, "author": author, "file": file}
        try:
            project = changelogs.read_project(root, *install.disk_reader(Path(search_path)))
        except UsageError as exc:
            raise StepFailed(f"{run.label} failed: {exc.message}", details=details) from None
        changeset = next((c for c in project.changesets if c.file == file and c.ordinal == ordinal), None)
        if changeset is None or changeset.digest != digest:
            raise StepFailed(f"{run.label} failed: {what} changed since sqlrs read it", details=details,
                             hint="run the command again")
        workdir = run.server.spec.scripts_dir / f"step{run.index}"
        shutil.rmtree(workdir, ignore_errors=True)
        for path, content in changelogs.only_changeset(project, changeset).items():
            target = workdir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        argv = [*install.command(Path(host.argv[0])), *json.loads(param("global_args") or "[]"),
                f"--search-path={workdir}", "update", f"--changelog-file={root}",
                *json.loads(param("command_args") or "[]")]
        try:
            with host_login(run) as login:
                env = {k: v for k, v in tool_environment(host.env, login).items() if not k.startswith("LIQUIBASE_")}
                env.update({"LIQUIBASE_COMMAND_URL": f"jdbc:postgresql://{login.host}:{login.port}/{login.dbname}",
                            "LIQUIBASE_COMMAND_USERNAME": login.user, "LIQUIBASE_COMMAND_PASSWORD": login.password,
                            "LIQUIBASE_ANALYTICS_ENABLED": "false"})
                result = run_host_command(run, argv, str(workdir), env)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if result.exit_code == 0:
            return
        error = liquibase_error(result.output) or f"Liquibase exited with {result.exit_code}"
        raise StepFailed(f"{run.label} failed: {what}: {error}",
                         details={**details, "exit_code": result.exit_code, "error": error,
                                  "output": result.output[-8000:]})
