"""`check:alembic --downgrades`, `check:django --backwards`: does undoing each step of a chain
restore the state it was built on?

For step k of a chain: an instance of state k (its parent's state with step k applied: a cached
state, so no upgrade runs here), the input kind's undo command run against it (Alembic's
downgrade of that one revision, Django's `migrate APP PREVIOUS`), then the instance compared with
state k-1 by the engine (`POST /v1/compare`: schema, and by default row counts). The tool's own
bookkeeping table (alembic_version, django_migrations) is left out of the comparison.

An input kind plugs in with an `Undo`: how to undo one of its steps on a database, what tables it
keeps its bookkeeping in, and how to name a step. Both undo through a `KeptRunner`, one process
in the user's Python for the whole check."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from sqlrs.changelogs import alembic_runner, django_runner
from sqlrs.domain.compare import differences
from sqlrs.engine_client.errors import ClientError
from sqlrs.engine_client.prefixes import Chain, compare

OUTPUT_TAIL = 200  # lines of the runner's output kept for the reason of a failure
CLOSE_SECONDS = 10.0


class Undo(Protocol):
    """How an input kind undoes one of its steps."""

    noun: str  # what the kind calls a step ("revision", "migration"): the results' key for its name
    ignore: list[str]  # relations the tool keeps its own bookkeeping in (left out of the comparison)

    def name(self, step: dict[str, Any]) -> str:
        """How reports name the step (a revision id, APP.MIGRATION)."""
        ...

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        """Undo `step` on the database at `dsn`, which holds it as its last step; None when that
        worked, else the reason it failed (one line)."""
        ...

    def close(self) -> None:
        """Release what undoing needed (a tool process kept for the next step)."""
        ...


class KeptRunner:
    """One runner process in the user's Python (the one that read the steps, where sqlrs is
    installed), started with the first undo and kept for the whole check: Python, the tool and the
    project load once. A request is a line on its stdin; its output (stdout and stderr, in order)
    is read until `answer` says the request is answered."""

    tool = "runner"
    ends_after_failure = False  # the runner exits once it answered a failure

    def __init__(self) -> None:
        self._runner: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL)

    def argv(self, step: dict[str, Any]) -> list[str]:
        """The runner's command line for `step`'s project."""
        raise NotImplementedError

    def answer(self, line: str) -> tuple[bool, str] | None:
        """(worked, reason) when `line` completes the answer to a request, else None."""
        raise NotImplementedError

    def ask(self, step: dict[str, Any], request: str) -> str | None:
        """Send `request`; None when it worked, else the reason it did not (one line)."""
        runner = self._runner or self._start(step)
        self._output.clear()
        assert runner.stdin is not None and runner.stdout is not None
        try:
            runner.stdin.write(request if request.endswith("\n") else request + "\n")
            runner.stdin.flush()
            for line in runner.stdout:
                answered = self.answer(line.rstrip("\n"))
                if answered is None:
                    continue
                worked, reason = answered
                if not worked and self.ends_after_failure:
                    self.close()
                return None if worked else reason
        except OSError:
            pass
        self.close()  # the runner died (env.py called sys.exit, say): the next undo starts another
        return f"the {self.tool} exited: {self.last_line() or 'no output'}"

    def last_line(self) -> str:
        lines = [line for line in self._output if line.strip()]
        return lines[-1] if lines else ""

    def _start(self, step: dict[str, Any]) -> subprocess.Popen[str]:
        run = step["run"]
        env = {name: value for name, value in run.get("env") or os.environ.items()
               if not name.startswith("PG") and name != "DATABASE_URL"}
        # its logging (stderr) with its answers: a line reader sees what came before a failure
        self._runner = subprocess.Popen(self.argv(step), cwd=run["cwd"], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self._runner

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        with contextlib.suppress(OSError):
            assert runner.stdin is not None
            runner.stdin.close()  # it ends when its input does
        try:
            runner.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
        if runner.stdout is not None:
            runner.stdout.close()


class AlembicUndo(KeptRunner):
    """`downgrade` of exactly one revision, by the user's Alembic in the user's Python: one runner
    process (sqlrs.changelogs.alembic_runner) for the whole check."""

    noun = "revision"
    ignore = ["alembic_version"]
    tool = "Alembic runner"

    def name(self, step: dict[str, Any]) -> str:
        return _param(step, "revision") or str(step["source"])

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        return self.ask(step, alembic_runner.request(_param(step, "config") or "alembic.ini",
                                                     _param(step, "revision") or "", dsn))

    def argv(self, step: dict[str, Any]) -> list[str]:
        return alembic_runner.argv(step["run"]["argv"][0])

    def answer(self, line: str) -> tuple[bool, str] | None:
        answered = alembic_runner.answer(line)
        if answered is None:
            self._output.append(line)
            return None
        return bool(answered["ok"]), str(answered.get("error") or "downgrade failed")


class DjangoUndo(KeptRunner):
    """`migrate APP PREVIOUS` (`zero` for an app's first migration) of exactly one migration, by the
    project's Django in the user's Python with the step's settings: the runner of the build steps
    (sqlrs.changelogs.django_runner), asked to go backwards, one process for the whole check.

    Step k's migration is the last of state k: nothing applied depends on it, so Django unapplies
    it alone (the runner refuses when Django would unapply more). Django's own bookkeeping,
    django_migrations, is left out of the comparison; the content types (and permissions) of the
    models the undo removed, which Django keeps, are deleted by the runner."""

    noun = "migration"
    ignore = ["django_migrations"]
    tool = "Django runner"
    ends_after_failure = True

    def __init__(self) -> None:
        super().__init__()
        self._marks = 0

    def name(self, step: dict[str, Any]) -> str:
        return f"{_param(step, 'app')}.{_param(step, 'migration')}"

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        self._marks = 0
        return self.ask(step, django_runner.request(_param(step, "app") or "", _param(step, "migration") or "",
                                                    connection_env(dsn), backwards=True))

    def argv(self, step: dict[str, Any]) -> list[str]:
        return django_runner.argv(step["run"]["argv"][0], _param(step, "settings") or "")

    def answer(self, line: str) -> tuple[bool, str] | None:
        before, marked, code = line.partition(django_runner.DONE_MARK)  # after a partial line, too
        if before or not marked:
            self._output.append(before)
        if not marked:
            return None
        self._marks += 1
        if self._marks < 2:  # the answer comes on stdout and on stderr, one pipe here
            return None
        if code.strip() == "0":
            return True, ""
        return False, django_runner.failure("\n".join(self._output)) or self.last_line() or f"exit code {code}"


def connection_env(dsn: str) -> dict[str, str]:
    """An instance's DSN (postgresql://user:password@host:port/db) as libpq's variables."""
    url = urllib.parse.urlsplit(dsn)
    return {"PGHOST": url.hostname or "127.0.0.1", "PGPORT": str(url.port or 5432),
            "PGUSER": urllib.parse.unquote(url.username or ""), "PGPASSWORD": urllib.parse.unquote(url.password or ""),
            "PGDATABASE": urllib.parse.unquote(url.path.lstrip("/")), "DATABASE_URL": dsn}


def _param(step: dict[str, Any], name: str) -> str | None:
    for key, value in step.get("run", {}).get("params", []):
        if key == name:
            return str(value)
    return None


def check_steps(chain: Chain, undo: Undo, *, data: str = "rows", note: Callable[[str], None] = lambda text: None,
                on_result: Callable[[dict[str, Any]], None] = lambda result: None) -> list[dict[str, Any]]:
    """Undo each step of `chain` on an instance of its state and compare with the state before it;
    one result per step: its name under the kind's noun (`revision`, `migration`), `parent` (the
    step before it, None: the base), `restores`, `differences`."""
    if not chain.steps:
        return []
    note(f"building (or finding) the {len(chain)} states of the chain...")
    chain.build()
    plan = chain.plan()
    try:
        return _check(chain, plan, undo, data, note, on_result)
    finally:
        undo.close()


def _check(chain: Chain, plan: list[dict[str, Any]], undo: Undo, data: str, note: Callable[[str], None],
           on_result: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    results = []
    for k in range(1, len(chain) + 1):
        step = chain.steps[k - 1]
        name = undo.name(step)
        parent = undo.name(chain.steps[k - 2]) if k > 1 else None
        note(f"[{k}/{len(chain)}] {name}: undoing it on an instance of its state...")
        with chain.instance(k) as undone:
            failure = undo.undo(step, undone["dsn"])
            if failure is not None:
                result = {undo.noun: name, "parent": parent, "restores": False,
                          "differences": [f"undo failed: {failure}"]}
            else:
                comparison = _compare_with(chain, plan, k - 1, undone["id"], data, undo.ignore)
                result = {undo.noun: name, "parent": parent, "restores": comparison["equal"],
                          "differences": differences(comparison, added="left behind", removed="missing")}
        results.append(result)
        on_result(result)
    return results


def _compare_with(chain: Chain, plan: list[dict[str, Any]], k: int, instance: str, data: str,
                  ignore: list[str]) -> dict[str, Any]:
    """The comparison of state k with the instance; through an instance of state k when the
    engine does not hold state k itself (a step it did not keep)."""
    try:
        return compare(chain.client, plan[k]["state_id"], instance, data=data, ignore=ignore,
                       image=chain.body.get("image"))
    except ClientError as error:
        if error.code != "not_found":
            raise
    with chain.instance(k) as parent:
        return compare(chain.client, parent["id"], instance, data=data, ignore=ignore)


def step_name(result: dict[str, Any]) -> str:
    """The name of a result's step, whatever its kind calls it."""
    return str(result["revision"] if "revision" in result else result["migration"])


def result_line(result: dict[str, Any]) -> str:
    """One step's result for people: `0005 (on 0006): does not restore: left behind: ...`."""
    line = f"{step_name(result)} (on {result['parent'] or 'base'}): "
    if result["restores"]:
        return line + "restores"
    return line + "does not restore: " + "; ".join(result["differences"])
