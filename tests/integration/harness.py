"""Driving the real `sqlrs` CLI in tests, and checking nothing is left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlrs.testing.runtime import processes_mentioning as processes_mentioning  # the tests take it from here

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("SQLRS_DATASETS", REPO.parent / "shared" / "datasets"))
if not DATASETS.exists():  # CI clones the repo elsewhere; the datasets sit beside it there too
    DATASETS = Path("/work/shared/datasets")
TEST_IMAGE = os.environ.get("SQLRS_TEST_IMAGE", "localhost/sqlrs-test-postgres:16")


def short_tmp(prefix: str = "sq") -> Path:
    """A short directory path: PostgreSQL's socket path must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Sqlrs:
    """One state directory, one runtime; runs the CLI as a user would."""

    def __init__(self, state_dir: Path, runtime: str = "native", image: str | None = None, cwd: Path | None = None):
        self.state_dir = state_dir
        self.runtime = runtime
        self.image = image if image is not None else (TEST_IMAGE if runtime in ("docker", "podman") else None)
        self.cwd = cwd or state_dir
        self.env = {**os.environ, "SQLRS_STATE_DIR": str(state_dir), "SQLRS_ENGINE_IDLE_TIMEOUT": "300"}
        self.env.pop("SQLRS_ENGINE_ADDR", None)
        self.env.pop("TAIDON_ENGINE_ADDR", None)

    def run(self, *args: str, input: str | bytes | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        text_input = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(
            [sys.executable, "-m", "sqlrs", *args], input=text_input, capture_output=True, text=True,
            cwd=str(cwd or self.cwd), env={**self.env, **(env or {})}, timeout=timeout, check=False,
        )

    def runtime_flags(self) -> list[str]:
        flags = ["--runtime", self.runtime]
        if self.image:
            flags += ["--image", self.image]
        return flags

    def prepare_input(self, kind: str, *args: str, cwd: Path | None = None, input: str | None = None) -> str:
        """`prepare:KIND ARGS` on this runtime: the DSN, exactly one line on stdout."""
        result = self.run(f"prepare:{kind}", *self.runtime_flags(), *args, cwd=cwd, input=input)
        assert result.returncode == 0, f"prepare:{kind} failed ({result.returncode}):\n{result.stderr}"
        lines = result.stdout.splitlines()
        assert len(lines) == 1 and lines[0].startswith("postgresql://sqlrs:"), result.stdout
        return lines[0]

    def plan_input(self, kind: str, *args: str, cwd: Path | None = None) -> list[dict[str, Any]]:
        """`plan:KIND -o json ARGS` on this runtime: its rows."""
        result = self.run(f"plan:{kind}", *self.runtime_flags(), "-o", "json", *args, cwd=cwd)
        assert result.returncode == 0, result.stderr
        plan: list[dict[str, Any]] = json.loads(result.stdout)
        return plan

    def prepare(self, *psql_args: str, name: str | None = None, cwd: Path | None = None,
                input: str | None = None) -> str:
        extra = ["--name", name] if name else []
        return self.prepare_input("psql", *extra, "--", *psql_args, cwd=cwd, input=input)

    def plan(self, *psql_args: str, cwd: Path | None = None) -> list[dict[str, Any]]:
        return self.plan_input("psql", "--", *psql_args, cwd=cwd)

    def remove_dsn(self, dsn: str) -> None:
        """Remove the instance with this DSN."""
        for instance in self.instances():
            if instance["dsn"] == dsn:
                assert self.run("rm", instance["id"]).returncode == 0

    def json(self, *args: str) -> Any:
        result = self.run(*args, "-o", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def instances(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.json("ls", "--instances")
        return data

    def states(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.json("ls", "--states")
        return data

    def engine_pid(self) -> int | None:
        try:
            return int(json.loads((self.state_dir / "engine.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def close(self) -> list[str]:
        """Remove every instance, stop the engine; return what was left behind (should be nothing)."""
        problems = []
        if (self.state_dir / "engine.json").exists():
            for instance in self.instances():
                result = self.run("rm", "--force", instance["id"])  # cleanup: even with clients
                if result.returncode != 0:
                    problems.append(f"rm {instance['id']}: {result.stderr}")
            self.run("engine", "stop")
        deadline = time.monotonic() + 20
        while processes_mentioning(str(self.state_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        problems += [f"process {pid}: {cmd}" for pid, cmd in processes_mentioning(str(self.state_dir))]
        return problems


SLACK = 60.0  # "promptly" is a few seconds; this holds on a machine many times slower


def collected_tests(root: Path, *paths: str) -> int:
    """How many tests pytest collects in the project at `root` (under `paths`, default everywhere),
    with the project's own configuration."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
                            cwd=root, capture_output=True, text=True, timeout=300, check=True)
    found = re.search(r"^(\d+) tests? collected", result.stdout, re.M)
    assert found, result.stdout[-2000:]
    return int(found.group(1))


def wait_until(condition: Callable[[], object], timeout: float = SLACK, interval: float = 0.2) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded (else its exit code and stderr)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return str(result.stdout)


def step_failure(result: subprocess.CompletedProcess[str]) -> list[str]:
    """A command whose step failed (exit 1): its `sqlrs: error:` message, then the lines under
    it (LINE/caret, DETAIL, HINT, STATEMENT)."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stderr}"
    return result.stderr.split("sqlrs: error: ")[-1].splitlines()


def write(path: Path, text: str) -> Path:
    """A test script file, its folders made on the way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def check_rebuild_of_last_step(sq: Sqlrs, workspace: Path) -> tuple[str, str]:
    """Three steps prepared; the last edited: the plan and the build touch only that step.

    Returns the DSNs of the instance before and after the edit (both still running)."""
    write(workspace / "1.sql", "CREATE TABLE t (id int);\n")
    write(workspace / "2.sql", "INSERT INTO t SELECT generate_series(1, 100);\n")
    write(workspace / "3.sql", "CREATE VIEW v AS SELECT count(*) AS n FROM t;\n")
    args = ("-f", "1.sql", "-f", "2.sql", "-f", "3.sql")
    before_edit = sq.prepare(*args, cwd=workspace)
    assert psql(before_edit, "SELECT n FROM v") == "100"
    before = {s["id"] for s in sq.states()}
    write(workspace / "3.sql", "CREATE VIEW v AS SELECT count(*) * 2 AS n FROM t;\n")
    plan = sq.plan(*args, cwd=workspace)
    assert [p["cached"] for p in plan] == [True, True, True, False]
    after_edit = sq.prepare(*args, cwd=workspace)
    assert psql(after_edit, "SELECT n FROM v") == "200"
    assert psql(before_edit, "SELECT n FROM v") == "100"
    after = {s["id"]: s for s in sq.states()}
    assert set(after) - before == {plan[3]["state_id"]}
    assert after[plan[3]["state_id"]]["parent_id"] == plan[2]["state_id"]
    return before_edit, after_edit


def golden(dsn: str, dataset: str, dbname: str | None = None, ignore: tuple[str, ...] = ()) -> str:
    """Run the data set's golden.sql against `dsn` and return the diff (empty when it passes).

    `ignore` names check labels whose line is left out on both sides (for catalog changes in
    newer PostgreSQL majors; the caller then checks what that line meant another way).
    """
    folder = DATASETS / dataset
    if dbname:
        dsn = dsn.rsplit("/", 1)[0] + "/" + dbname
    result = subprocess.run(["psql", "-X", "-d", dsn, "-f", str(folder / "golden.sql")], capture_output=True,
                            text=True, check=False, timeout=300)
    expected = (folder / "golden.expected").read_text()
    if result.returncode != 0:
        return f"psql failed: {result.stderr}"
    actual = result.stdout
    if ignore:
        def keep(text: str) -> str:
            return "".join(line for line in text.splitlines(True) if line.split("|", 1)[0] not in ignore)

        expected, actual = keep(expected), keep(actual)
    if actual == expected:
        return ""
    import difflib

    return "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                        "golden.expected", "actual"))


def build_psql(state_dir: Path) -> list[str]:
    """The host psql processes connected to one of this state dir's servers (a build's psql, on
    native): its command line names nothing of the build (it reads its steps from stdin), its
    PGHOST does. Other tests' psql processes are not counted."""
    found = []
    for pid, cmdline in processes_mentioning("psql"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if any(v.startswith(f"PGHOST={state_dir}/") for v in environ) or str(state_dir) in cmdline:
            found.append(f"pid {pid}: {cmdline}")
    return found


def psql(dsn: str, sql: str) -> str:
    result = subprocess.run(["psql", "-X", "-At", "-d", dsn, "-c", sql], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def api(sq: Sqlrs, path: str, method: str = "GET") -> Any:
    """Call the engine's HTTP API as a client other than the CLI would (curl on the socket)."""
    info = json.loads((sq.state_dir / "engine.json").read_text())
    out = subprocess.run(["curl", "-s", "-X", method, "--unix-socket", info["socket"], "-H",
                          f"Authorization: Bearer {info['token']}", f"http://engine{path}"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    if "/events" in path:
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    return json.loads(out)


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
