"""Finding, spawning and talking to the engine with the standard library only (the CLI and
the library both connect through `connect`).

Discovery (SPEC section 2): TAIDON_ENGINE_ADDR / SQLRS_ENGINE_ADDR → <state_dir>/engine.json →
spawn. A stale engine.json (dead pid, no health answer) is replaced; two CLIs racing to spawn
serialize on a lock file and get one engine.
"""

from __future__ import annotations

import json
import os
import time

from sqlrs.engine_client import wire
from sqlrs.engine_client.errors import EXIT_ENGINE, EXIT_USAGE, ClientError, raise_engine_error
from sqlrs.procfs import pid_alive  # stdlib only: no pathlib, no domain errors on the hot path
from sqlrs.version import __version__

# Everything `status`, `ls`, `rm`, `run:psql` and a prepare hit need is imported above; what only
# spawning needs (subprocess, threading, fcntl, pathlib) is imported there (sqlrs/entrypoints/cli/fast.py).
__all__ = ["ENGINE_STOP_TIMEOUT", "EngineClient", "Response", "connect", "live_engine", "pid_alive",
           "raise_engine_error", "read_engine_json", "recorded_engine", "shutdown_engine", "spawn_engine",
           "usable_state_dir"]
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

    StateDir = str | os.PathLike[str]

SPAWN_TIMEOUT = 60.0


class Response:
    def __init__(self, reply: wire.Reply):
        self.status = reply.status
        self.headers = reply.headers
        self._reply = reply
        self._lines: Iterator[dict[str, Any]] | None = None

    def json(self) -> Any:
        try:
            body = self._reply.read()
        finally:
            self._reply.close()
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"engine answered with invalid JSON (HTTP {self.status})", EXIT_ENGINE) from None

    def lines(self) -> Iterator[dict[str, Any]]:
        """NDJSON objects as the engine sends them; called again, it goes on where the last left."""
        if self._lines is None:
            self._lines = self._read_lines()
        return self._lines

    def _read_lines(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._reply.iter_lines():
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            self._reply.close()

    def close(self) -> None:
        self._reply.close()


class EngineClient:
    """Requests to one engine; every request opens its own connection (thread-safe)."""

    def __init__(self, endpoint: str, token: str | None,
                 rediscover: Callable[[], tuple[str, str | None]] | None = None):
        self.endpoint = endpoint
        self.token = token
        # engine.json was trusted without a health request (one round trip less on every
        # command); if the engine is not there after all, or does not take the token (engine.json
        # was stale: the engine restarted, the file was replaced), this finds or spawns the real
        # one, once per client
        self._rediscover = rediscover

    def request(self, method: str, path: str, body: Any = None, *, timeout: float | None = 300.0,
                accept: str = "application/json") -> Response:
        headers = {"Accept": accept, "X-Sqlrs-Version": __version__}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            sock = wire.connect(self.endpoint, timeout)
        except OSError:
            if self._rediscover is None:
                raise ClientError(f"engine at {self.endpoint} is unreachable", EXIT_ENGINE,
                               hint="check `sqlrs engine status`; restart with `sqlrs engine stop`") from None
            self.endpoint, self.token = self._rediscover()
            self._rediscover = None
            return self.request(method, path, body, timeout=timeout, accept=accept)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            reply = wire.exchange(sock, method, path, headers, payload)
        except OSError as exc:
            sock.close()
            raise ClientError(f"engine at {self.endpoint} is unreachable: {exc}", EXIT_ENGINE,
                           hint="check `sqlrs engine status`; restart with `sqlrs engine stop`") from None
        if reply.status == 401 and self._rediscover is not None:
            reply.close()  # a stale token: the engine has written engine.json again by now
            self.endpoint, self.token = self._rediscover()
            self._rediscover = None
            return self.request(method, path, body, timeout=timeout, accept=accept)
        return Response(reply)

    def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201, 202),
             timeout: float | None = 300.0) -> Any:
        """A JSON request; engine errors become ClientError with the right exit code."""
        response = self.request(method, path, body, timeout=timeout)
        if response.status in (301, 302, 307, 308) and response.headers.get("location"):
            response.close()
            return self.call(method, response.headers["location"], body, ok=ok, timeout=timeout)
        data = response.json()
        if response.status not in ok:
            raise_engine_error(response.status, data)
        return data


# -- discovery ---------------------------------------------------------------------------------
def _health(endpoint: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        response = EngineClient(endpoint, None).request("GET", "/v1/health", timeout=timeout)
        if response.status != 200:
            response.close()
            return None
        data = response.json()
        return data if isinstance(data, dict) else None
    except (ClientError, OSError, ValueError):
        return None


ENGINE_STOP_TIMEOUT = 30.0  # seconds a stopping engine may take to finish its requests


def shutdown_engine(client: EngineClient, pid: int) -> bool:
    """Ask the engine to stop and wait until its process `pid` is gone (a zombie counts as
    gone); False when it is still there after ENGINE_STOP_TIMEOUT."""
    client.call("POST", "/v1/engine/shutdown")
    deadline = time.monotonic() + ENGINE_STOP_TIMEOUT
    while pid and pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def read_engine_json(state_dir: StateDir) -> dict[str, Any] | None:
    try:
        with open(os.path.join(state_dir, "engine.json"), encoding="utf-8") as handle:
            info = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def recorded_engine(state_dir: StateDir) -> dict[str, Any] | None:
    """engine.json's content when it names an endpoint and a live process; else None."""
    info = read_engine_json(state_dir)
    if not info or "endpoint" not in info:
        return None
    pid = info.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return None
    return info


def live_engine(state_dir: StateDir) -> dict[str, Any] | None:
    """engine.json's content when it names a live, answering engine; else None."""
    info = recorded_engine(state_dir)
    if info is None:
        return None
    health = _health(str(info["endpoint"]))
    if health is None or health.get("instance_id") != info.get("instance_id"):
        return None
    return info


def connect(state_dir: StateDir, spawn: bool = True) -> EngineClient:
    """A client for the engine serving `state_dir`, spawning one when needed."""
    address = os.environ.get("TAIDON_ENGINE_ADDR") or os.environ.get("SQLRS_ENGINE_ADDR")
    if address:
        token = os.environ.get("SQLRS_ENGINE_TOKEN")
        if token is None:
            info = read_engine_json(state_dir)
            token = str(info.get("token")) if info and info.get("endpoint") == address else None
        if _health(address) is None:
            raise ClientError(f"engine at {address} (from the environment) does not answer", EXIT_ENGINE,
                           hint="unset TAIDON_ENGINE_ADDR/SQLRS_ENGINE_ADDR or start that engine")
        return EngineClient(address, token)

    def discover() -> tuple[str, str | None]:
        found = live_engine(state_dir)
        if found is None:
            if not spawn:
                raise ClientError("no engine is running", EXIT_ENGINE,
                               hint="it starts on demand, or: sqlrs engine start")
            found = spawn_engine(state_dir)
        return str(found["endpoint"]), str(found["token"])

    info = recorded_engine(state_dir)
    if info is not None and "token" in info and isinstance(info.get("pid"), int):
        return EngineClient(str(info["endpoint"]), str(info["token"]), rediscover=discover)
    return EngineClient(*discover(), rediscover=discover)


STATE_DIR_HINT = "give --state-dir (or SQLRS_STATE_DIR) a directory you can write"


def usable_state_dir(state_dir: Path) -> None:
    """Make the state directory, or say in one line why it cannot be one (exit 2)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ClientError(f"state directory {state_dir} is a file, not a directory", EXIT_USAGE,
                       hint=STATE_DIR_HINT) from None
    except NotADirectoryError:
        raise ClientError(f"cannot create state directory {state_dir}: a parent of it is a file", EXIT_USAGE,
                       hint=STATE_DIR_HINT) from None
    except OSError as exc:
        raise ClientError(f"cannot create state directory {state_dir}: {exc.strerror or exc}", EXIT_USAGE,
                       hint=STATE_DIR_HINT) from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ClientError(f"state directory {state_dir} is not writable by this user (uid {os.geteuid()})",
                       EXIT_USAGE, hint=STATE_DIR_HINT + ", or run as its owner") from None


def _full_filesystem(state_dir: StateDir) -> ClientError | None:
    """The error to show when the state directory's filesystem has no block left for this user."""
    try:
        stat = os.statvfs(state_dir)
    except OSError:
        return None
    if stat.f_bavail > 0:  # (root may write on into the reserve, but the engine just failed to)
        return None
    from sqlrs.domain.errors import filesystem_full

    full = filesystem_full(str(state_dir))
    return ClientError(full.message, full.exit_code, hint=full.hint, code=full.code)


def spawn_engine(state_dir: StateDir) -> dict[str, Any]:
    import fcntl
    import subprocess
    import sys
    import threading
    from pathlib import Path

    folder = Path(state_dir)
    usable_state_dir(folder)
    with open(folder / "spawn.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = live_engine(folder)  # someone else may have spawned it while we waited
        if info is not None:
            return info
        (folder / "engine.failed.json").unlink(missing_ok=True)
        log = open(folder / "engine.log", "ab")  # noqa: SIM115 - handed to the child
        os.chmod(folder / "engine.log", 0o600)
        child = subprocess.Popen(
            [sys.executable, "-m", "sqlrs.entrypoints.engine", "--state-dir", str(folder)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
            cwd="/",
        )
        log.close()
        deadline = time.monotonic() + SPAWN_TIMEOUT
        delay = 0.01
        while time.monotonic() < deadline:
            info = read_engine_json(folder)
            if info and info.get("pid") == child.pid and _health(str(info["endpoint"])) is not None:
                # a library process may outlive the engine: reap it when it exits, or it lingers
                # as a zombie that looks alive to whoever waits for the engine to stop
                threading.Thread(target=child.wait, name="sqlrs-engine-reaper", daemon=True).start()
                return info
            failed = folder / "engine.failed.json"
            if child.poll() == 0 and not failed.exists():
                # exit 0 at start: another engine holds engine.lock (its engine.json was removed
                # or replaced; it writes it again within a second): wait for it
                time.sleep(delay)
                delay = min(delay * 1.5, 0.1)
                info = live_engine(folder)
                if info is not None:
                    return info
                continue
            if failed.exists() or child.poll() is not None:
                try:
                    child.wait(timeout=10)  # it exits right after saying why: leave nothing running
                except subprocess.TimeoutExpired:
                    pass
                why: dict[str, Any] = {}
                try:
                    why = json.loads(failed.read_text())
                    reason = str(why.get("error", ""))
                except (OSError, ValueError, AttributeError):
                    reason = f"exit code {child.returncode}"
                info = live_engine(folder)  # lost a race to an engine started another way
                if info is not None:
                    return info
                full = None if why else _full_filesystem(folder)  # the engine could not even say why
                if full is not None:
                    raise full
                # engine.failed.json says whose fault it is: bad configuration (2) or not (3)
                code = why.get("exit_code") if isinstance(why, dict) else None
                hint = why.get("hint") if isinstance(why, dict) else None
                raise ClientError(f"the engine failed to start: {reason}",
                               code if code in (EXIT_USAGE, EXIT_ENGINE) else EXIT_ENGINE,
                               hint=f"{hint}; see {folder / 'engine.log'}" if hint
                               else f"see {folder / 'engine.log'}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        raise ClientError("the engine did not start in time", EXIT_ENGINE, hint=f"see {folder / 'engine.log'}")
