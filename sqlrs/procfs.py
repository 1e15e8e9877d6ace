"""Which process owns something, read from /proc (Linux; stdlib only: the client imports it).

A process is named by its pid *and* its start time (field 22 of /proc/PID/stat, clock ticks
since boot), so a pid the kernel reused for another process is not mistaken for the owner.
The engine runs on the same machine (and in the same pid namespace) as its clients.
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # state is the field after the parenthesised command name
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (the first is the state, field 3);
    None when there is no such process or no /proc to ask."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces or ')': split after the last one
    return data[data.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot); None when there is no such
    process (or no /proc to ask), or it is a zombie (it exited; only its parent has not reaped it)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def own_identity() -> tuple[int, int] | None:
    """(pid, start time) of this process; None where /proc is not available."""
    pid = os.getpid()
    started = start_time(pid)
    return None if started is None else (pid, started)


def alive(pid: int, started: int) -> bool:
    """True while the process that was `pid` with start time `started` exists (and is not a zombie).

    Without /proc nothing can be told; the owner counts as alive then (its TTL still applies)."""
    if not os.path.isdir("/proc/self"):
        return True
    return start_time(pid) == started
