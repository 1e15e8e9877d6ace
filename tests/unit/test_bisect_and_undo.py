"""The client-side searches of issue 25 on a chain whose states are numbers: bisect's halving
(sqlrs.engine_client.bisect) and the downgrade check's walk (sqlrs.engine_client.reversals), and
the Django undo's conversation with its runner (a stand-in runner speaking the real protocol).
The real thing runs in tests/integration/test_questions.py."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sqlrs.changelogs import django_runner
from sqlrs.changelogs.serve_loop import HOST_SERVE_LOOP
from sqlrs.engine_client.bisect import FAILS_ON_BASE, FOUND, PASSES_ON_LAST, bisect
from sqlrs.engine_client.errors import ClientError
from sqlrs.engine_client.reversals import DjangoUndo, check_steps, connection_env, result_line


class NumberChain:
    """A chain of `steps` steps whose state k is the number k; records the instances asked for."""

    def __init__(self, steps: int, client: Any = None):
        self.steps = [{"kind": "command", "source": f"step {k}"} for k in range(1, steps + 1)]
        self.client = client
        self.body: dict[str, Any] = {}
        self.opened: list[int] = []
        self.built: list[int | None] = []

    def __len__(self) -> int:
        return len(self.steps)

    def plan(self) -> list[dict[str, Any]]:
        return [{"index": k, "source": "initdb" if k == 0 else f"step {k}", "state_id": f"s{k}"}
                for k in range(len(self.steps) + 1)]

    def build(self, k: int | None = None) -> str:
        self.built.append(k)
        return f"s{len(self.steps) if k is None else k}"

    @contextlib.contextmanager
    def instance(self, k: int) -> Iterator[dict[str, Any]]:
        self.opened.append(k)
        yield {"id": f"i{k}", "dsn": f"postgresql://x/{k}", "state_id": f"s{k}"}


@given(steps=st.integers(1, 400), data=st.data())
def test_bisect_finds_the_first_bad_state_within_its_bound(steps: int, data: st.DataObject) -> None:
    first_bad = data.draw(st.integers(0, steps + 1))  # 0: fails on the base; steps + 1: never fails
    chain = NumberChain(steps)
    result = bisect(chain, lambda instance: (int(instance["id"][1:]) < first_bad, "ERROR:  bad"))  # type: ignore[arg-type]
    assert result["tested"] <= math.ceil(math.log2(steps)) + 2 if steps > 1 else result["tested"] <= 2
    assert sorted(chain.opened) == sorted(p["index"] for p in result["probes"])
    assert len(set(chain.opened)) == len(chain.opened)  # no state checked twice
    if first_bad == 0:
        assert result["verdict"] == FAILS_ON_BASE and result["first_bad"]["index"] == 0
    elif first_bad > steps:
        assert result["verdict"] == PASSES_ON_LAST and result["first_bad"] is None
    else:
        assert result["verdict"] == FOUND
        assert result["first_bad"] == {"index": first_bad, "source": f"step {first_bad}", "state_id": f"s{first_bad}",
                                       "error": "ERROR:  bad"}
    # every probe lies between the states known good and bad so far: nothing past a failing probe
    # is ever asked for (nor built)
    for i, probe in enumerate(result["probes"]):
        before = result["probes"][:i]
        assert probe["index"] < min([p["index"] for p in before if not p["passed"]], default=steps + 1)
        assert probe["index"] > max([p["index"] for p in before if p["passed"]], default=-1)


def test_an_early_failure_never_asks_for_the_tail_of_a_long_chain() -> None:
    chain = NumberChain(1000)
    result = bisect(chain, lambda instance: (int(instance["id"][1:]) < 10, ""))  # type: ignore[arg-type]
    assert result["first_bad"]["index"] == 10
    assert max(chain.opened) == 500  # the first probe; everything after it came from the left half


class Engine:
    """What check_steps asks the engine: comparisons, answered from a table of what differs."""

    def __init__(self, differing: dict[tuple[str, str], dict[str, Any]], missing: set[str] = frozenset()):  # type: ignore[assignment]
        self.differing = differing
        self.missing = missing
        self.calls: list[tuple[str, str]] = []

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        assert (method, path) == ("POST", "/v1/compare")
        self.calls.append((body["a"], body["b"]))
        if body["a"] in self.missing:
            raise ClientError("no such state", code="not_found")
        extra = self.differing.get((body["a"], body["b"]), {})
        schema = {"added": [], "removed": [], "changed": [], **extra.get("schema", {})}
        tables = extra.get("tables", [])
        equal = not any(schema.values()) and not any(t["data_changed"] for t in tables)
        return {"equal": equal, "schema": schema, "tables": tables, "sequences": []}


class Undo:
    noun = "revision"
    ignore = ["versions"]

    def __init__(self, fails: set[str] = frozenset()):  # type: ignore[assignment]
        self.fails = fails
        self.undone: list[tuple[str, str]] = []
        self.closed = False

    def name(self, step: dict[str, Any]) -> str:
        return str(step["source"]).replace("step ", "r")

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        self.undone.append((self.name(step), dsn))
        return "boom" if self.name(step) in self.fails else None

    def close(self) -> None:
        self.closed = True


def test_each_step_is_undone_on_its_state_and_compared_with_its_parent() -> None:
    left = {"schema": {"added": ["column public.t.c integer"]}}
    engine = Engine({("s1", "i2"): left}, missing={"s2"})
    chain = NumberChain(4, engine)
    undo = Undo(fails={"r4"})
    results = check_steps(chain, undo)  # type: ignore[arg-type]
    assert chain.built == [None]  # the whole chain first, then instances of its states
    assert undo.undone == [("r1", "postgresql://x/1"), ("r2", "postgresql://x/2"), ("r3", "postgresql://x/3"),
                           ("r4", "postgresql://x/4")]
    # state 2 is not held by the engine: compared through an instance of it instead
    assert engine.calls == [("s0", "i1"), ("s1", "i2"), ("s2", "i3"), ("i2", "i3")]
    assert [(r["revision"], r["parent"], r["restores"]) for r in results] == [
        ("r1", None, True), ("r2", "r1", False), ("r3", "r2", True), ("r4", "r3", False)]
    assert results[1]["differences"] == ["left behind: column public.t.c integer"]
    assert results[3]["differences"] == ["undo failed: boom"]
    assert undo.closed
    assert result_line(results[0]) == "r1 (on base): restores"
    assert result_line(results[1]) == "r2 (on r1): does not restore: left behind: column public.t.c integer"


def test_a_kind_names_its_steps_in_the_results() -> None:
    undo = Undo(fails={"r2"})
    undo.noun = "migration"
    results = check_steps(NumberChain(2, Engine({})), undo)  # type: ignore[arg-type]
    assert [(r["migration"], r["parent"], r["restores"]) for r in results] == [("r1", None, True), ("r2", "r1", False)]
    assert "revision" not in results[0]
    assert result_line(results[1]) == "r2 (on r1): does not restore: undo failed: boom"


# stands in for Django: the runner's serving loop and marks, an `apply` that says what it was asked
# (and leaves a partial line on stderr, as a library may), failing for migrations named *irreversible
FAKE_RUNNER = HOST_SERVE_LOOP + r'''
import os, sys
ERROR_MARK, DONE_MARK = sys.argv[2], sys.argv[3]
def apply(request):
    print("pid %d settings %s: %s.%s on port %s, backwards %s" % (os.getpid(), sys.argv[1], request["app"],
          request["name"], request["connection"]["PGPORT"], request["backwards"]))
    sys.stderr.write("a partial line")
    if request["name"].endswith("irreversible"):
        raise RuntimeError("Operation RunPython is not reversible")
def fail(exc, request):
    print("Traceback (most recent call last): ...", file=sys.stderr)
    print(ERROR_MARK + type(exc).__name__ + ": " + str(exc), file=sys.stderr)
sqlrs_serve(apply, fail, DONE_MARK)
'''


class StandInUndo(DjangoUndo):
    """DjangoUndo with the stand-in runner; records the runner's output of each undo."""

    def argv(self, step: dict[str, Any]) -> list[str]:
        return [sys.executable, "-u", "-c", FAKE_RUNNER, *django_runner.runner_args(_settings(step))[1:]]

    def undo(self, step: dict[str, Any], dsn: str) -> str | None:
        failure = super().undo(step, dsn)
        self.said = list(self._output)
        return failure


def _settings(step: dict[str, Any]) -> str:
    return dict(step["run"]["params"])["settings"]


def django_step(app: str, name: str) -> dict[str, Any]:
    return {"kind": "django", "source": f"{app}.{name}",
            "run": {"cwd": os.getcwd(), "argv": [sys.executable], "env": [["PATH", os.environ["PATH"]]],
                    "params": [["settings", "site.settings"], ["app", app], ["migration", name], ["file", "x.py"]]}}


def test_the_django_undo_asks_one_runner_until_it_fails_then_starts_another() -> None:
    undo = StandInUndo()
    try:
        first = django_step("polls", "0001_initial")
        assert undo.name(first) == "polls.0001_initial" and undo.noun == "migration"
        assert undo.ignore == ["django_migrations"]
        assert undo.undo(first, "postgresql://sqlrs:pw@127.0.0.1:5501/postgres") is None
        pid = undo.said[0].split()[1]
        assert undo.said[0] == f"pid {pid} settings site.settings: polls.0001_initial on port 5501, backwards True"
        assert undo.undo(django_step("polls", "0002_slug"), "postgresql://sqlrs:pw@127.0.0.1:5502/postgres") is None
        assert undo.said[0].startswith(f"pid {pid} ")  # the same process: Django loads once
        failure = undo.undo(django_step("polls", "0003_irreversible"), "postgresql://sqlrs:pw@127.0.0.1:5503/postgres")
        assert failure == "RuntimeError: Operation RunPython is not reversible"
        # the runner stops after a failure: the next undo gets a new one, and its answer
        assert undo.undo(django_step("tags", "0001_initial"), "postgresql://sqlrs:pw@127.0.0.1:5504/postgres") is None
        assert undo.said[0].split()[1] != pid
        assert undo.said[0].endswith("tags.0001_initial on port 5504, backwards True")
    finally:
        undo.close()
    assert undo._runner is None


def test_a_runner_that_dies_is_reported_with_its_last_words() -> None:
    class Dying(StandInUndo):
        def argv(self, step: dict[str, Any]) -> list[str]:
            return [sys.executable, "-c", "print('django.core.exceptions.ImproperlyConfigured: no SECRET_KEY')"]

    undo = Dying()
    try:
        assert undo.undo(django_step("polls", "0001_initial"), "postgresql://u:p@127.0.0.1:5501/db") == (
            "the Django runner exited: django.core.exceptions.ImproperlyConfigured: no SECRET_KEY")
    finally:
        undo.close()


def test_an_instance_dsn_becomes_libpq_variables() -> None:
    assert connection_env("postgresql://sqlrs:p%40ss@127.0.0.1:5432/postgres") == {
        "PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "sqlrs", "PGPASSWORD": "p@ss", "PGDATABASE": "postgres",
        "DATABASE_URL": "postgresql://sqlrs:p%40ss@127.0.0.1:5432/postgres"}
