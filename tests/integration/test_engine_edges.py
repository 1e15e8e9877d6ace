"""Finding the engine when engine.json lies, and engines of another version (issue 14.7), and
state directories or engine addresses that cannot work (issue 14.6)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Sqlrs, processes_mentioning, short_tmp, wait_for

import sqlrs

# A test-only way to run an engine of another version: no hook in sqlrs itself, the wrapper
# rebinds sqlrs.__version__ before the engine's modules import it.
FAKE_VERSION_ENGINE = (
    "import sys, sqlrs; sqlrs.__version__ = sys.argv[1]; "
    "from sqlrs.entrypoints.engine.server import main; raise SystemExit(main(['--state-dir', sys.argv[2]]))"
)


def engine_info(sq: Sqlrs) -> dict[str, object]:
    info: dict[str, object] = json.loads((sq.state_dir / "engine.json").read_text())
    return info


def write_engine_json(sq: Sqlrs, info: dict[str, object]) -> None:
    path = sq.state_dir / "engine.json"
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)


def test_engine_of_another_major_version_can_be_stopped(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    log = open(sq.state_dir / "fake-engine.log", "ab")  # noqa: SIM115 - closed below
    engine = subprocess.Popen([sys.executable, "-c", FAKE_VERSION_ENGINE, "99.0.0", str(sq.state_dir)],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=sq.env, start_new_session=True)
    log.close()
    try:
        wait_for(lambda: sq.engine_pid() == engine.pid, what="the 99.0.0 engine's engine.json")
        refused = sq.run("ls")
        assert refused.returncode == 3, refused.stderr
        assert f"engine 99.0.0 cannot serve CLI {sqlrs.__version__}" in refused.stderr
        assert "hint: restart the engine with: sqlrs engine stop" in refused.stderr
        status = sq.run("engine", "status")  # health works across versions
        assert status.returncode == 0 and "version 99.0.0" in status.stdout, status.stdout + status.stderr
        stopped = sq.run("engine", "stop")  # the hint works: shutdown is exempt from the check
        assert stopped.returncode == 0, stopped.stderr
        assert engine.wait(timeout=60) == 0
        again = sq.run("ls", "-o", "json")  # a new engine of this version starts on demand
        assert again.returncode == 0, again.stderr
        assert engine_info(sq)["version"] == sqlrs.__version__
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def test_wrong_token_in_engine_json_is_recovered(sqlrs_native: Sqlrs) -> None:
    """engine.json replaced (another engine's file restored, a stale copy): the engine answers
    401, writes its engine.json again, and the CLI rediscovers once and goes on."""
    sq = sqlrs_native
    assert sq.run("engine", "start").returncode == 0
    good = engine_info(sq)
    write_engine_json(sq, {**good, "token": "stale-token"})
    listed = sq.run("ls", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert engine_info(sq) == good  # put back by the engine; the same engine serves


def test_engine_json_naming_a_dead_engine_while_another_serves(sqlrs_native: Sqlrs) -> None:
    """engine.json names a dead process while the live engine holds engine.lock: the engine the
    CLI spawns exits at once (the lock is taken); the CLI waits for the live one's engine.json."""
    sq = sqlrs_native
    assert sq.run("engine", "start").returncode == 0
    good = engine_info(sq)
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_engine_json(sq, {"endpoint": "unix:///nonexistent/engine.sock", "pid": dead.pid, "token": "x",
                           "version": sqlrs.__version__, "instance_id": "gone"})
    listed = sq.run("ls", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert engine_info(sq) == good


def test_engine_json_removed_is_written_again(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    assert sq.run("engine", "start").returncode == 0
    good = engine_info(sq)
    (sq.state_dir / "engine.json").unlink()
    wait_for(lambda: (sq.state_dir / "engine.json").exists(), what="engine.json written again")
    assert engine_info(sq) == good
    assert Path(str(good["socket"])).exists()


# -- unusable state directories and engine addresses (issue 14.6) -------------------------------
def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command, checking it came as `sqlrs: error:` + `hint:`."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 2 and lines[0].startswith("sqlrs: error: ") and lines[1].startswith("hint: "), \
        result.stderr
    return lines[0]


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = short_tmp("sqe")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("where", ["file", "under-file"])
@pytest.mark.parametrize("command", [("ls",), ("status",), ("init", "local")])
def test_state_dir_that_is_a_file(scratch: Path, where: str, command: tuple[str, ...]) -> None:
    (scratch / "f").write_text("not a directory\n")
    state_dir = scratch / "f" if where == "file" else scratch / "f" / "sub"
    result = Sqlrs(state_dir, cwd=scratch).run(*command)
    assert result.returncode == 2, result.stderr
    assert str(state_dir) in one_line_error(result)
    assert not processes_mentioning(str(state_dir))


@pytest.mark.parametrize("sub", ["", "new"])
def test_state_dir_not_writable_by_an_unprivileged_user(scratch: Path, sub: str) -> None:
    """As `nobody`: a root-owned dir (or a dir to create in it) is refused in one line."""
    state_dir = scratch / sub if sub else scratch
    harness = Sqlrs(state_dir)
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             sys.executable, "-m", "sqlrs", "ls"], capture_output=True, text=True,
                            env={**harness.env, "HOME": "/nonexistent"}, cwd="/", timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert str(state_dir) in line and ("not writable" in line or "Permission denied" in line), line
    assert sorted(p.name for p in scratch.iterdir()) == []  # nothing written
    assert not processes_mentioning(str(state_dir))


@pytest.mark.parametrize(("bind", "code", "says"), [
    ("localhost:0", 2, "'localhost' is not an IP address"),
    ("127.0.0.1:abc", 2, "port 'abc' is not a number"),
    ("127.0.0.1:70000", 2, "port '70000' is not a number"),
    ("10.1.2.3:0", 2, "non-loopback"),
    ("in-use", 3, "cannot listen on 127.0.0.1:"),
])
def test_bad_engine_bind(scratch: Path, bind: str, code: int, says: str) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        if bind == "in-use":
            bind = f"127.0.0.1:{busy.getsockname()[1]}"
        result = Sqlrs(scratch).run("ls", env={"SQLRS_ENGINE_BIND": bind})
    finally:
        busy.close()
    assert result.returncode == code, result.stderr
    line = one_line_error(result)
    assert line.startswith("sqlrs: error: the engine failed to start: ") and says in line, line
    log = (scratch / "engine.log").read_text()
    assert "Traceback" not in log and "engine start-up failed: " in log and says in log, log
    failed = json.loads((scratch / "engine.failed.json").read_text())
    assert says in failed["error"] and failed["exit_code"] == code and failed["hint"]
    assert not processes_mentioning(str(scratch))
    assert not (scratch / "engine.json").exists()
