"""Host tools against the build server: a TCP login for the step, and running the tool.

The build server listens on 127.0.0.1:<port> (native), or has that port published on
127.0.0.1 (docker, podman), so a tool on the host always connects there. The `sqlrs` role
(superuser, created with the base) gets a random password for the step only: it is cleared
before the state is committed, and every instance sets its own anyway.

A failed tool is reported as psql steps are (sqlrs.domain.pgerrors): the headline, then `LINE n:`
with the caret, DETAIL, HINT and the failing statement. A tool run through a Python runner of
ours (Alembic's, a new kind's) reports its exception with `PYTHON_ERROR_REPORTER`; for any other
command, `read_failure` scans its output for the error it printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs

from sqlrs.domain.errors import StepFailed
from sqlrs.domain.passwords import new_password, scram_verifier
from sqlrs.domain.pgerrors import ErrorReport, from_runner, scan_output
from sqlrs.services.instances.server_instances import INSTANCE_DB, INSTANCE_USER
from sqlrs.services.states.steps.base import StepRun
from sqlrs.services.states.steps.output import WINDOW, OutputCollector

# what differs between the calls of one test suite (its tests, its xdist workers) and no runner
# needs (the step's connection comes with each request): a runner started for one test serves the next
VOLATILE = frozenset({"PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER"})
# the connection a host tool gets; any other PG* variable of the caller would only mislead libpq
CONNECTION_VARIABLES = ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
# how long output may keep coming after the tool exited (a child it left holds the pipes)
DRAIN_SECONDS = 5.0
TERM_GRACE_SECONDS = 5.0
# the line a runner's PYTHON_ERROR_REPORTER prints last on stderr: this, then one JSON object
ERROR_MARK = "sqlrs-step-error: "

# Python source for a runner that applies a step in the user's Python (`python -c RUNNER ...`):
# `sqlrs_report_failure(exc, step_file)` prints the traceback, then ERROR_MARK and a JSON object:
# `error` (the exception in one line), `line` (the innermost traceback line in `step_file`: where
# in the user's revision or migration it failed) and `server` (the PostgreSQL error's fields from
# psycopg 3, psycopg2, asyncpg or pg8000, with the driver's own formatting in `text` and the
# statement SQLAlchemy or Django names). read_failure turns it into the step's error report.
PYTHON_ERROR_REPORTER = r'''
def _sqlrs_server_fields(e):
    diag = getattr(e, "diag", None)  # psycopg 3 and psycopg2
    if diag is not None and getattr(diag, "message_primary", None):
        fields = {name: getattr(diag, attr, None) for name, attr in (
            ("message", "message_primary"), ("sqlstate", "sqlstate"), ("detail", "message_detail"),
            ("hint", "message_hint"), ("position", "statement_position"), ("context", "context"),
            ("internal_query", "internal_query"), ("internal_position", "internal_position"))}
        fields["severity"] = getattr(diag, "severity_nonlocalized", None) or getattr(diag, "severity", None)
        fields["text"] = getattr(e, "pgerror", None) or str(e)  # libpq's own LINE/caret, DETAIL, HINT
        return fields
    if isinstance(getattr(e, "sqlstate", None), str) and hasattr(e, "position"):  # asyncpg
        return {name: getattr(e, name, None) for name in (
            "message", "severity", "sqlstate", "detail", "hint", "position", "context", "internal_query",
            "internal_position")}
    args = getattr(e, "args", ())
    if args and isinstance(args[0], dict) and "M" in args[0]:  # pg8000: the protocol's field codes
        f = args[0]
        return {"message": f.get("M"), "severity": f.get("V") or f.get("S"), "sqlstate": f.get("C"),
                "detail": f.get("D"), "hint": f.get("H"), "position": f.get("P"), "context": f.get("W"),
                "internal_query": f.get("q"), "internal_position": f.get("p")}
    return None


def sqlrs_report_failure(exc, step_file=None):
    import json, os, sys, traceback
    traceback.print_exception(type(exc), exc, exc.__traceback__)
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    text = (str(exc).strip().splitlines() or [""])[0]
    report = {"error": name + (": " + text if text else "")}
    if step_file:
        target = os.path.realpath(step_file)
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if os.path.realpath(frame.filename) == target:
                report["line"] = frame.lineno
                break
    todo, seen, statement = [exc], set(), None
    while todo:  # the exception, what it wraps (SQLAlchemy's .orig), its causes
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if statement is None:
            found = getattr(e, "statement", None)  # SQLAlchemy's; a runner may set it on what it raises
            statement = found if isinstance(found, str) else None
        fields = _sqlrs_server_fields(e)
        if fields is not None:
            fields["statement"] = statement
            report["server"] = fields
            break
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    print("''' + ERROR_MARK + r'''" + json.dumps(report, default=str), file=sys.stderr, flush=True)
'''


@attrs.frozen
class Login:
    """A TCP login to the build server, valid while the step runs."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGPASSWORD": self.password, "PGDATABASE": self.dbname}


@contextlib.contextmanager
def host_login(run: StepRun, password: str | None = None) -> Iterator[Login]:
    """A password for the `sqlrs` role while the block runs (`password`, or a new one), cleared
    afterwards."""
    spec = run.server.spec
    password = password or new_password()
    run.admin.set_password(spec.run_dir, spec.port, INSTANCE_USER, scram_verifier(password))
    try:
        yield Login("127.0.0.1", spec.port, INSTANCE_USER, password, INSTANCE_DB)
    finally:
        # the state should not carry a password a build used; a failed step's scratch is dropped anyway
        with contextlib.suppress(Exception):
            run.admin.execute(spec.run_dir, spec.port, [f"ALTER ROLE {INSTANCE_USER} PASSWORD NULL"])


def tool_environment(caller_env: Sequence[tuple[str, str]], login: Login | None) -> dict[str, str]:
    """The caller's environment (the engine's, if the caller sent none) with the build server's
    connection instead of whatever PG* settings it had (none: a runner started before its server,
    whose requests bring the connection)."""
    env = dict(caller_env) if caller_env else dict(os.environ)
    for name in list(env):
        if name.startswith("PG") or name == "DATABASE_URL":
            del env[name]
    if login is not None:
        env.update(login.env())
    return env


@attrs.frozen
class ToolResult:
    exit_code: int
    output: str  # the tail of stdout and stderr, interleaved as it came

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def read_failure(result: ToolResult) -> ErrorReport:
    """What a failed host tool reported: a runner's ERROR_MARK line, else the last PostgreSQL
    error in its output (psql's or libpq's `ERROR:` lines, or a line followed by a `LINE n:` /
    `DETAIL:` / `HINT:` block, e.g. a Python traceback's exception), else its last line."""
    lines = result.output.splitlines()
    for line in reversed(lines):
        if line.startswith(ERROR_MARK):
            try:
                data = json.loads(line[len(ERROR_MARK):])
            except ValueError:
                break
            if isinstance(data, dict):
                return from_runner(data)
            break
    scanned = scan_output("\n".join(line for line in lines if not line.startswith(ERROR_MARK)))
    if scanned is not None:
        return scanned
    return ErrorReport(result.last_line())  # "" when it printed nothing


def run_host_command(run: StepRun, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> ToolResult:
    """Run `argv` in `cwd`, its output streamed to the job's events; killed (with everything it
    started) when the job is cancelled. Raises StepFailed when it cannot start at all."""
    if not os.path.isdir(cwd):
        raise StepFailed(f"{run.label} failed: its working directory {cwd} does not exist",
                         details={"step": run.index, "source": run.step.source})
    collected = OutputCollector(run.log, WINDOW)
    try:
        process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        reason = "command not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise StepFailed(f"{run.label} failed: {argv[0]}: {reason}",
                         details={"step": run.index, "source": run.step.source, "exit_code": None}) from None
    try:
        _pump(run, process, collected)
        code = process.wait()
    finally:
        # whatever the tool left running belongs to the step: it ends with it
        _kill_group(process, signal.SIGKILL)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    collected.flush()
    run.ctx.check_cancel()
    return ToolResult(code, collected.text())


def _pump(run: StepRun, process: subprocess.Popen[bytes], collected: OutputCollector) -> None:
    with selectors.DefaultSelector() as selector:
        assert process.stdout is not None and process.stderr is not None
        selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        exited_at: float | None = None
        while selector.get_map():
            if run.ctx.cancel.is_set():
                _stop(process)
                return
            for key, _ in selector.select(timeout=0.2):
                data = os.read(key.fd, 65536)
                if data:
                    collected.feed(key.data, data)
                else:
                    selector.unregister(key.fileobj)
            collected.tick()
            if process.poll() is not None:
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > DRAIN_SECONDS:
                    return


def _stop(process: subprocess.Popen[bytes]) -> None:
    _kill_group(process, signal.SIGTERM)
    try:
        process.wait(TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(process, signal.SIGKILL)
        process.wait()


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class HostSession:
    """A host tool that applies several steps of one job: started once, then asked once per step
    (a line on its stdin), so what it loads (an interpreter, a framework, the user's project) is
    loaded once per job instead of once per step.

    The tool answers each request with its output, then `<mark><exit code>` ending a line on stdout
    and again on stderr (the streams are separate pipes: the answer is complete when both carry the
    mark; a Python runner answers through sqlrs.changelogs.serve_loop). A tool that exits instead
    answers with its exit code.
    """

    def __init__(self, run: StepRun, argv: Sequence[str], cwd: str, env: Mapping[str, str], mark: str,
                 reusable: bool = False):
        self.reusable = reusable  # it may serve a later build of the same project (idle_runners.py)
        if not os.path.isdir(cwd):
            raise StepFailed(f"{run.label} failed: its working directory {cwd} does not exist",
                             details={"step": run.index, "source": run.step.source})
        self.mark = mark.encode()
        try:
            self.process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            reason = "command not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
            raise StepFailed(f"{run.label} failed: {argv[0]}: {reason}",
                             details={"step": run.index, "source": run.step.source, "exit_code": None}) from None

    @classmethod
    def kept(cls, run: StepRun, kind: str, setting: str, runner: Sequence[str], login: Login | None,
             mark: str, reusable: bool = False) -> HostSession:
        """The build's runner of `kind` for this project (`python -u -c *runner`): started with the
        first step that needs it, reused while the next ones run the same way (same Python,
        directory, `setting` — a config file, a settings module — and environment); the build
        closes it, or (`reusable`: its requests carry the step's connection) leaves it to the next
        build of the project (`run.runners`), which takes it instead of starting one."""
        host = run.step.run
        assert host is not None
        key = json.dumps([kind, host.argv[0], host.cwd, setting, runner,
                          sorted(pair for pair in host.env if pair[0] not in VOLATILE)])
        session = run.sessions.get(key)
        if isinstance(session, cls) and session.alive:
            return session
        if session is not None:
            session.close()
        waiting = run.runners.take(key) if reusable and run.runners is not None else None
        if isinstance(waiting, cls):
            run.sessions[key] = waiting
            return waiting
        session = run.sessions[key] = cls(run, [host.argv[0], "-u", "-c", *runner], host.cwd,
                                          tool_environment(host.env, login), mark, reusable)
        return session

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, run: StepRun, line: str, log: Callable[[str, str], None] | None = None) -> ToolResult:
        """Send one request; its output goes to the job's events (through `log` when given).
        Cancelling the job ends the tool."""
        self.send(line)
        return self.receive(run, log)

    def send(self, line: str) -> None:
        """Send a request without waiting for its answer (`receive` reads it)."""
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        if process.stdout.closed:
            return
        try:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        except OSError:  # it is gone: what it said last is all there is
            pass

    def receive(self, run: StepRun, log: Callable[[str, str], None] | None = None) -> ToolResult:
        """The answer to the request sent last; its output goes to the job's events (through
        `log` when given). Cancelling the job ends the tool."""
        process = self.process
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        if process.stdout.closed:  # closed before: nobody to ask
            return ToolResult(process.returncode or 1, "")
        collected = OutputCollector(log or run.log, WINDOW)
        answers: dict[str, int | None] = {"stdout": None, "stderr": None}
        partial = {"stdout": b"", "stderr": b""}
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "stdout")
            selector.register(process.stderr, selectors.EVENT_READ, "stderr")
            while selector.get_map() and None in answers.values():
                if run.ctx.cancel.is_set():
                    self.close()
                    run.ctx.check_cancel()
                for key, _ in selector.select(timeout=0.2):
                    stream = key.data
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    *lines, partial[stream] = (partial[stream] + data).split(b"\n")
                    said = bytearray()  # the lines of one read: one event (OutputCollector)
                    for text in lines:
                        before, marked, code = text.partition(self.mark)  # after a partial line, too
                        if before or not marked:
                            said += before + b"\n"
                        if marked:
                            answers[stream] = int(code.strip() or b"1")
                    if said:
                        collected.feed(stream, bytes(said))
                collected.tick()
        for stream, rest in partial.items():
            collected.feed(stream, rest)
        collected.flush()
        if None in answers.values():  # no answer: it exited (or closed its output)
            self.close()
            return ToolResult(process.returncode or 1, collected.text())
        return ToolResult(answers["stdout"] or answers["stderr"] or 0, collected.text())

    def close(self) -> None:
        """End the tool and everything it started."""
        _kill_group(self.process, signal.SIGKILL)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.process.wait()
