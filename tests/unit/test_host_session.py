"""A host tool kept for a job's steps (services/states/steps/host.HostSession, used by Django's steps) and the
job's finish callbacks that end it. Real child processes; the job runs on the fake adapters."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from unittest import mock

import pytest
from fakes import command, job_context, wired

from sqlrs.domain.errors import Cancelled, StepFailed
from sqlrs.domain.model import StateKind
from sqlrs.domain.steps import HostRun, Step
from sqlrs.services.jobs import JobContext
from sqlrs.services.requests import PrepareRequest
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.host import HostSession, Login

MARK = "test-done "
# answers each line: its pid and the request on stdout, a partial line on stderr, then the marks;
# "exit" makes it leave without answering, "sleep" makes it hang
TOOL = r'''
import os, sys, time
for line in sys.stdin:
    request = line.strip()
    if request == "exit":
        print("leaving", flush=True)
        sys.exit(7)
    if request == "sleep":
        time.sleep(60)
    print(f"pid {os.getpid()} got {request}", flush=True)
    sys.stderr.write("no newline here")
    sys.stderr.flush()
    code = 3 if request == "fail" else 0
    print(f"''' + MARK + r'''{code}", flush=True)
    print(f"''' + MARK + r'''{code}", file=sys.stderr, flush=True)
'''


@pytest.fixture
def ctx() -> Iterator[JobContext]:
    with wired() as (services, _):
        yield job_context(services)


def step_run(ctx: JobContext) -> StepRun:
    step = Step(kind="django", source="app.0001", keyed=(("migration", "app.0001"),),
                run=HostRun(cwd="/", argv=(sys.executable,)))
    # the session talks to its tool only: no build server or admin is involved
    return StepRun(ctx, None, 1, step, None)  # type: ignore[arg-type]


def test_one_tool_answers_every_request_of_the_job(ctx: JobContext) -> None:
    run = step_run(ctx)
    session = HostSession(run, [sys.executable, "-u", "-c", TOOL], "/", {"PATH": "/usr/bin:/bin"}, MARK)
    try:
        first = session.request(run, "alpha")
        second = session.request(run, "beta")
        failed = session.request(run, "fail")
    finally:
        session.close()
    assert first.exit_code == 0 and second.exit_code == 0 and failed.exit_code == 3
    pid = first.output.split()[1]
    assert f"pid {pid} got beta" in second.output  # the same process
    assert "no newline here" in first.output.splitlines()  # a partial line before the mark is kept
    assert MARK not in first.output
    assert not session.alive


def test_a_tool_that_exits_answers_with_its_exit_code(ctx: JobContext) -> None:
    run = step_run(ctx)
    session = HostSession(run, [sys.executable, "-u", "-c", TOOL], "/", {"PATH": "/usr/bin:/bin"}, MARK)
    result = session.request(run, "exit")
    assert result.exit_code == 7 and "leaving" in result.output
    assert not session.alive
    again = session.request(run, "alpha")  # writing to a gone tool is no crash either
    assert again.exit_code == 7


def test_cancelling_the_job_ends_the_tool(ctx: JobContext) -> None:
    run = step_run(ctx)
    session = HostSession(run, [sys.executable, "-u", "-c", TOOL], "/", {"PATH": "/usr/bin:/bin"}, MARK)
    timer = threading.Timer(0.5, ctx.cancel.set)
    timer.start()
    with pytest.raises(Cancelled):
        session.request(run, "sleep")
    timer.join()
    assert not session.alive


@pytest.mark.parametrize("fails", [False, True])
def test_the_build_closes_the_tool_sessions_of_its_steps_however_it_ends(fails: bool) -> None:
    """A step kind that keeps a tool running for the build's later steps (StepRun.sessions) has it
    stopped when the build ends, whether it succeeded or failed."""
    closed: list[str] = []

    class Session:
        reusable = False
        alive = True

        def close(self) -> None:
            closed.append("closed")

    class Executor:
        kind = "command"
        state_kind = StateKind.PSQL

        def apply(self, run: StepRun) -> None:
            run.sessions.setdefault("tool", Session())
            if fails and "two" in (run.step.sql or ""):
                raise StepFailed(f"{run.label} failed: on purpose")

    with wired() as (services, _), mock.patch("sqlrs.services.states.build.executor_for", lambda kind: Executor()):
        request = PrepareRequest(steps=(command("one"), command("two")), build_only=True)
        if fails:
            with pytest.raises(StepFailed):
                services.prepare.run(job_context(services), request)
        else:
            services.prepare.run(job_context(services), request)
    assert closed == ["closed"]  # one session for both steps, closed once


@pytest.mark.parametrize("fails", [False, True])
def test_a_reusable_runner_waits_for_the_next_build_of_its_project(fails: bool) -> None:
    """A runner whose requests carry their own connection (Alembic's) outlives a build that
    succeeded: the next build of the same project takes the same process (no second start of
    Python and the project). After a failed build, or when the engine stops, it is stopped."""
    pids: list[str] = []
    sessions: list[HostSession] = []

    class Executor:
        kind = "command"
        state_kind = StateKind.PSQL

        def apply(self, run: StepRun) -> None:
            with_host = StepRun(run.ctx, run.server, run.index, step_run(run.ctx).step, run.admin, run.sessions,
                                run.options, run.superuser, run.runners)
            login = Login("127.0.0.1", 5432, "sqlrs", "secret", "postgres")
            session = HostSession.kept(with_host, "tool", "config", [TOOL], login, MARK, reusable=True)
            sessions.append(session)
            pids.append(session.request(with_host, "step").output.split()[1])
            if fails and "two" in (run.step.sql or ""):
                raise StepFailed(f"{run.label} failed: on purpose")

    with wired() as (services, _), mock.patch("sqlrs.services.states.build.executor_for", lambda kind: Executor()):
        def build(*sql: str) -> None:
            request = PrepareRequest(steps=tuple(command(text) for text in sql), build_only=True)
            if fails:
                with pytest.raises(StepFailed):
                    services.prepare.run(job_context(services), request)
            else:
                services.prepare.run(job_context(services), request)

        build("one", "two")
        assert len(set(pids)) == 1  # one runner for the build's steps
        assert sessions[0].alive is (not fails) and len(services.runners) == (0 if fails else 1)
        build("three", "two")  # another chain, the same project
        assert (len(set(pids)) == 1) is (not fails)  # the runner the first build left, or a new one
        services.runners.close()
        assert not any(session.alive for session in sessions)


def test_the_first_steps_runner_starts_before_its_build_server() -> None:
    """An executor that prestarts (Alembic's) starts its runner before the build's first server is
    made, without a connection; the step then finds that runner running and uses it."""
    seen: list[object] = []

    class Executor:
        kind = "command"
        state_kind = StateKind.PSQL

        def with_host(self, run: StepRun) -> StepRun:
            return StepRun(run.ctx, run.server, run.index, step_run(run.ctx).step, run.admin, run.sessions,
                           run.options, run.superuser, run.runners)

        def prestart(self, run: StepRun) -> None:
            seen.append(("prestart", run.index, run.server))
            HostSession.kept(self.with_host(run), "tool", "config", [TOOL], None, MARK, reusable=True)

        def apply(self, run: StepRun) -> None:
            started = dict(run.sessions)
            login = Login("127.0.0.1", 5432, "sqlrs", "secret", "postgres")
            session = HostSession.kept(self.with_host(run), "tool", "config", [TOOL], login, MARK, reusable=True)
            seen.append(("apply", run.index, list(started.values()) == [session]))

    with wired() as (services, _):
        # the base first: a build that makes it (initdb) starts no tool ahead
        services.prepare.run(job_context(services), PrepareRequest(steps=(command("warm"),), build_only=True))
        with mock.patch("sqlrs.services.states.build.executor_for", lambda kind: Executor()):
            request = PrepareRequest(steps=(command("one"), command("two")), build_only=True)
            services.prepare.run(job_context(services), request)
            services.runners.close()
    assert seen == [("prestart", 1, None), ("apply", 1, True), ("apply", 2, True)]


def test_a_job_waiting_for_another_jobs_build_starts_no_runner_ahead() -> None:
    """When another job builds the first step (holds its state's lock), this job waits for it and
    prestarts nothing: a runner would only take the CPU from that build."""
    seen: list[str] = []

    class Executor:
        kind = "command"
        state_kind = StateKind.PSQL

        def prestart(self, run: StepRun) -> None:
            seen.append("prestart")

        def apply(self, run: StepRun) -> None:
            seen.append(f"apply {run.index}")

    with wired() as (services, _):
        services.prepare.run(job_context(services), PrepareRequest(steps=(command("warm"),), build_only=True))
        steps = (command("one"), command("two"))
        plan = services.prepare.run(job_context(services), PrepareRequest(steps=steps, plan_only=True))["plan"]
        other = services.catalog.locks.get(str(plan[1]["state_id"]))
        other.acquire()  # another job builds step 1
        ctx = job_context(services)
        with mock.patch("sqlrs.services.states.build.executor_for", lambda kind: Executor()):
            builder = threading.Thread(target=services.prepare.run,
                                       args=(ctx, PrepareRequest(steps=steps, build_only=True)))
            builder.start()
            deadline = time.monotonic() + 60
            while not any("waiting: another job" in str(event.data.get("text", ""))
                          for event in services.jobs.events_after(ctx.job.id, 0)):
                assert time.monotonic() < deadline and builder.is_alive()
                time.sleep(0.01)
            assert seen == []  # waiting, and nothing started ahead
            other.release()
            builder.join(60)
    assert seen == ["apply 1", "apply 2"]
