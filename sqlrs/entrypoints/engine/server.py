"""The engine process: binds its socket, writes engine.json, serves until idle.

Started by the CLI (`python -m sqlrs.entrypoints.engine --state-dir DIR`), detached from the
terminal. Exactly one engine serves a state directory: it holds `engine.lock` for its life.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlrs import __version__
from sqlrs.services.layout import Layout

log = logging.getLogger("sqlrs.engine")


def write_engine_json(path: Path, info: dict[str, Any]) -> None:
    """Atomically publish the engine's address and token, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".engine.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_published(path: Path, info: dict[str, Any]) -> Callable[[], None]:
    """A function that writes engine.json again when it does not hold `info` (someone removed
    or replaced it): this engine holds engine.lock, so it is the one clients must find."""

    def republish() -> None:
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = None
        if current != info:
            log.warning("%s did not name this engine (removed or replaced): writing it again", path.name)
            try:
                write_engine_json(path, info)
            except OSError as exc:
                log.error("cannot write %s: %s", path, exc)

    return republish


class RefusedBind(Exception):
    """SQLRS_ENGINE_BIND is not a loopback IP address and port (bad configuration)."""


BIND_HINT = ("set SQLRS_ENGINE_BIND to 127.0.0.1:PORT or [::1]:PORT (PORT 0: any free port), "
             "or unset it for the Unix socket")


def parse_bind(text: str) -> tuple[str, int]:
    """`127.0.0.1:8765`, `[::1]:0`, `:0` or `8765` -> (host, port); RefusedBind otherwise."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise RefusedBind(f"SQLRS_ENGINE_BIND={text}: {host!r} is not an IP address") from None
    if not address.is_loopback:
        raise RefusedBind(f"refusing to listen on non-loopback address {host}")
    if not port.isdigit() or int(port) > 65535:
        raise RefusedBind(f"SQLRS_ENGINE_BIND={text}: port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def bind_listener(layout: Layout) -> tuple[socket.socket, dict[str, Any]]:
    """A Unix socket in the state dir, or TCP on loopback when SQLRS_ENGINE_BIND asks for it."""
    tcp = os.environ.get("SQLRS_ENGINE_BIND")
    if tcp:
        host, port = parse_bind(tcp)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        actual = sock.getsockname()[1]
        return sock, {"endpoint": f"http://{host}:{actual}"}
    path = layout.engine_socket
    path.unlink(missing_ok=True)  # we hold engine.lock: any socket here is a dead engine's
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock, {"endpoint": f"unix://{path}", "socket": str(path)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sqlrs-engine")
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir).absolute()
    layout = Layout(state_dir=state_dir, store_root=state_dir / "store")

    logging.basicConfig(
        level=os.environ.get("SQLRS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock_handle = open(state_dir / "engine.lock", "a+")  # noqa: SIM115 - held for the process's life
    except OSError as exc:  # nowhere to write engine.failed.json: the CLI checks this before spawning
        log.error("engine start-up failed: state directory %s is not usable: %s", state_dir,
                  exc.strerror or exc)
        return 2
    try:
        fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another engine serves %s; exiting", state_dir)
        return 0

    def failed(message: str, hint: str | None = None, exit_code: int = 3) -> int:
        """One line in engine.log; engine.failed.json tells the waiting CLI what to print and
        its exit code (2: bad configuration, 3: the engine cannot start)."""
        log.error("engine start-up failed: %s", message + (f" (hint: {hint})" if hint else ""))
        write_engine_json(state_dir / "engine.failed.json", {"error": message, "hint": hint, "exit_code": exit_code,
                                                              "pid": os.getpid(), "time": time.time()})
        return 1

    try:
        sock, address = bind_listener(layout)
    except RefusedBind as exc:
        return failed(str(exc), BIND_HINT, exit_code=2)
    except OSError as exc:
        where = os.environ.get("SQLRS_ENGINE_BIND") or str(layout.engine_socket)
        return failed(f"cannot listen on {where}: {exc.strerror or exc}",
                      "another process may use that address; pick another port (0: any free one)"
                      if os.environ.get("SQLRS_ENGINE_BIND") else None)
    from sqlrs.entrypoints.engine.app import create_app  # heavy: after the cheap checks above
    from sqlrs.entrypoints.engine.bootstrap import bootstrap

    try:
        services = bootstrap(state_dir)
    except Exception as exc:
        from sqlrs.domain.errors import SqlrsError

        sock.close()
        if "socket" in address:
            Path(address["socket"]).unlink(missing_ok=True)
        if isinstance(exc, SqlrsError):
            return failed(exc.message, exc.hint, exit_code=exc.exit_code if exc.exit_code in (2, 3) else 3)
        if isinstance(exc, OSError):
            return failed(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        log.exception("engine start-up failed")  # a bug: the traceback belongs in engine.log
        return failed(f"{type(exc).__name__}: {exc}")
    (state_dir / "engine.failed.json").unlink(missing_ok=True)
    token = secrets.token_urlsafe(32)
    instance_id = secrets.token_hex(8)
    app, engine_state = create_app(services, token, instance_id)
    idle_timeout = float(services.config.get("engine.idle_timeout"))
    info = {**address, "pid": os.getpid(), "token": token, "version": __version__, "instance_id": instance_id}
    write_engine_json(layout.engine_json, info)
    engine_state.republish = keep_published(layout.engine_json, info)
    log.info("engine %s (pid %d) serving %s", instance_id, os.getpid(), address["endpoint"])
    try:
        asyncio.run(serve(app, engine_state, sock, idle_timeout))
    finally:
        services.jobs.cancel_all()
        try:
            current = json.loads(layout.engine_json.read_text())
            if current.get("instance_id") == instance_id:
                layout.engine_json.unlink(missing_ok=True)
                if "socket" in address:
                    Path(address["socket"]).unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
        log.info("engine %s stopped", instance_id)
    return 0


async def serve(app: Any, engine_state: Any, sock: socket.socket, idle_timeout: float) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 3.0
    config.keep_alive_timeout = 30.0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, engine_state.shutdown.set)

    async def idle_watch() -> None:
        while not engine_state.shutdown.is_set():
            await asyncio.sleep(1.0)
            engine_state.republish()  # a removed or replaced engine.json is put back within a second
            idle_for = time.monotonic() - engine_state.last_activity
            # busy() reads the metadata on the event loop: only once idle long enough to matter
            if idle_timeout > 0 and idle_for > idle_timeout and not engine_state.busy():
                log.info("idle for %.0fs: exiting", idle_for)
                engine_state.shutdown.set()

    watcher = asyncio.create_task(idle_watch())
    try:
        await hypercorn_serve(app, config, shutdown_trigger=engine_state.shutdown.wait)
    finally:
        watcher.cancel()
