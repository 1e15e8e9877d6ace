"""`check:KIND --downgrades`: does undoing each step of a chain restore the state it was built on?

For step k of a chain: an instance of state k (its parent's state with step k applied: a cached
state, so no upgrade runs here), the input kind's undo command run against it (Alembic's
downgrade of that one revision), then the instance compared with state k-1 by the engine
(`POST /v1/compare`: schema, and by default row counts). The tool's own bookkeeping table
(alembic_version) is left out of the comparison.

An input kind plugs in with an `Undo`: how to undo one of its steps on a database, what tables it
keeps its bookkeeping in, and how to name a step. The Alembic one is here; another kind (Django's
`migrate APP PREVIOUS`) adds its own.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
from collections.abc import Callable
from typing import Any, Protocol

from sqlrs.changelogs import alembic_runner
from sqlrs.domain.compare import differences
from sqlrs.engine_client.errors import ClientError
from sqlrs.engine_client.prefixes import Chain, compare

OUTPUT_TAIL = 200  # lines of the runner's output kept for the reason of a failure
CLOSE_SECONDS = 10.0


class Undo(Protocol):
    """How an input kind undoes one of its steps."""

    ignore: list[str]  # relations the tool keeps its own bookkeeping in (left out of the comparison)

    def name(self, step: dict[str, Any]) -> str:
        """How reports name the step (a revision id)."""
        ...

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        """Undo `step` on the database at `dsn`, which holds it as its last step; None when that
        worked, else the reason it failed (one line)."""
        ...

    def close(self) -> None:
        """Release what undoing needed (a tool process kept for the next step)."""
        ...


class AlembicUndo:
    """`downgrade` of exactly one revision, by the user's Alembic in the user's Python (the one
    that read the revisions, where sqlrs is installed): one runner process
    (sqlrs.changelogs.alembic_runner) for the whole check, started with the first undo."""

    ignore = ["alembic_version"]

    def __init__(self) -> None:
        self._runner: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL)

    def name(self, step: dict[str, Any]) -> str:
        return _param(step, "revision") or str(step["source"])

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        runner = self._runner or self._start(step)
        self._output.clear()
        assert runner.stdin is not None and runner.stdout is not None
        try:
            runner.stdin.write(alembic_runner.request(_param(step, "config") or "alembic.ini",
                                                      _param(step, "revision") or "", dsn))
            runner.stdin.flush()
            for line in runner.stdout:
                answered = alembic_runner.answer(line)
                if answered is not None:
                    return None if answered["ok"] else str(answered.get("error") or "downgrade failed")
                self._output.append(line.rstrip())
        except OSError:
            pass
        self.close()  # the runner died (env.py called sys.exit, say): the next undo starts another
        lines = [line for line in self._output if line.strip()]
        return f"the Alembic runner exited: {lines[-1] if lines else 'no output'}"

    def _start(self, step: dict[str, Any]) -> subprocess.Popen[str]:
        run = step["run"]
        env = {name: value for name, value in run.get("env") or os.environ.items()
               if not name.startswith("PG") and name != "DATABASE_URL"}
        # its logging (stderr) with its answers: a line reader sees what came before a failure
        self._runner = subprocess.Popen(alembic_runner.argv(run["argv"][0]), cwd=run["cwd"], env=env, text=True,
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


def _param(step: dict[str, Any], name: str) -> str | None:
    for key, value in step.get("run", {}).get("params", []):
        if key == name:
            return str(value)
    return None


def check_steps(chain: Chain, undo: Undo, *, data: str = "rows", note: Callable[[str], None] = lambda text: None,
                on_result: Callable[[dict[str, Any]], None] = lambda result: None) -> list[dict[str, Any]]:
    """Undo each step of `chain` on an instance of its state and compare with the state before it;
    one result per step: `revision`, `parent` (None: the base), `restores`, `differences`."""
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
                result = {"revision": name, "parent": parent, "restores": False,
                          "differences": [f"undo failed: {failure}"]}
            else:
                comparison = _compare_with(chain, plan, k - 1, undone["id"], data, undo.ignore)
                result = {"revision": name, "parent": parent, "restores": comparison["equal"],
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


def result_line(result: dict[str, Any]) -> str:
    """One step's result for people: `0005 (on 0006): does not restore: left behind: ...`."""
    line = f"{result['revision']} (on {result['parent'] or 'base'}): "
    if result["restores"]:
        return line + "restores"
    return line + "does not restore: " + "; ".join(result["differences"])
