"""The data-directory conventions of the `Runtime` port, shared by its adapters and the services.

Data directories always live on the host, so readiness and shutdown are observed the same way
for native servers and containers: through `postmaster.pid`, without spawning psql or
`pg_ctl -w`; the server's log is `<run_dir>/postgres.log`; the engine reaches a server over its
Unix socket without a password and TCP clients need one (`PG_HBA`). Stdlib only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from sqlrs.domain.errors import RuntimeFailure

PG_HBA = """\
# Written by sqlrs. The Unix socket lives in a directory only the engine and the server's user
# can enter; TCP (127.0.0.1 only, or a port published on 127.0.0.1) always needs a password.
local   all   all                 trust
host    all   all   all           scram-sha-256
"""


def read_postmaster_pid(data_dir: Path) -> tuple[int, str] | None:
    """(pid, status) from postmaster.pid, or None when there is none (server down cleanly)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    return int(lines[0]), status




def pg_major(data_dir: Path) -> str | None:
    """The PostgreSQL major a data directory belongs to (its PG_VERSION file); None when it cannot
    be read (no such directory, or a container's data the engine's user may not read)."""
    try:
        return (data_dir / "PG_VERSION").read_text().strip() or None
    except OSError:
        return None


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def started_at(data_dir: Path) -> int | None:
    """The start time (epoch seconds) recorded on line 3 of postmaster.pid."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[2])
    except (OSError, IndexError, ValueError):
        return None


def wait_ready(
    data_dir: Path,
    alive: Callable[[], bool],
    timeout: float,
    log_hint: Callable[[], str] = lambda: "",
    launched_at: float | None = None,
) -> int:
    """Wait until postmaster.pid says `ready`; return the postmaster's pid.

    `alive` tells whether the server process or container still runs, so a server that dies
    during start-up fails fast with its log instead of waiting for the timeout. A crashed
    server leaves a postmaster.pid that still says `ready`: with `launched_at` (epoch seconds),
    only a file written by a server started since then counts.
    """
    not_before = int(launched_at) if launched_at is not None else None
    deadline = time.monotonic() + timeout
    delay = 0.002
    next_alive_check = time.monotonic() + 0.05
    while True:
        info = read_postmaster_pid(data_dir)
        if info is not None and info[1] == "ready":
            start = started_at(data_dir) if not_before is not None else None
            if not_before is None or (start is not None and start >= not_before):
                return info[0]
        now = time.monotonic()
        # asking whether the server still runs may cost an API call: do it a few times a second
        if now >= next_alive_check:
            if not alive():
                raise RuntimeFailure("PostgreSQL exited during start-up", details={"log": log_hint()})
            next_alive_check = now + 0.1
        if now > deadline:
            raise RuntimeFailure(
                f"PostgreSQL did not become ready within {timeout:.0f}s", details={"log": log_hint()}
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.005)  # a server is ready in ~20 ms: poll finely


def wait_stopped(data_dir: Path, alive: Callable[[], bool], timeout: float) -> bool:
    """Wait until the server is gone; True when it shut down cleanly (no postmaster.pid)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    return read_postmaster_pid(data_dir) is None
