"""Facts read from a PostgreSQL data directory, shared by every runtime adapter.

The conventions themselves belong to the Runtime port (`sqlrs.ports.postmaster`); this module
adds what needs /proc: whether a postmaster still lives, and stopping one a crash left behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sqlrs.ports.postmaster import (
    PG_HBA,
    read_postmaster_pid,
    started_at,
    tail,
    wait_ready,
    wait_stopped,
)
from sqlrs.procfs import pid_alive

__all__ = ["PG_HBA", "is_postgres", "kill_leftover_server", "pid_alive", "read_postmaster_pid", "started_at", "tail",
           "wait_ready", "wait_stopped"]


def kill_leftover_server(data_dir: Path) -> None:
    """Stop a server a crashed engine left on `data_dir` (native runtime only): a container's
    postmaster.pid holds a pid of its own namespace, so only a process whose command line names
    the directory is ours."""
    info = read_postmaster_pid(data_dir)
    if info is None or not pid_alive(info[0]):
        return
    try:
        with open(f"/proc/{info[0]}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return
    if str(data_dir).encode() not in cmdline:
        return
    try:
        os.kill(info[0], signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while pid_alive(info[0]) and time.monotonic() < deadline:
        time.sleep(0.05)


def is_postgres(pid: int, *, unknown: bool) -> bool:
    """Whether process `pid` runs a postgres binary (its command line says so).

    `unknown` is the answer when /proc cannot tell: the native runtime asking "is this still
    my server?" says no (False); a container runtime asking "may a server on this host hold
    this data directory?" assumes the worst (True).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"postgres" in handle.read()
    except OSError:
        return unknown
