"""What servers cost in memory, read from /proc (Linux): the ServerMemory port for `sqlrs status`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from sqlrs.ports.processes import MemoryUse, ServerRef
from sqlrs.procfs import stat_fields


def _processes() -> dict[int, int]:
    """pid -> parent pid of every process."""
    table: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and len(fields) > 1 and fields[1].isdigit():  # field 4: the parent pid
            table[int(entry.name)] = int(fields[1])
    return table


def _in_container(pid: int, container_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return container_id in handle.read()
    except OSError:
        return False


def _rollup(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) of one process in bytes; PSS None when smaps_rollup cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle
                      if line.startswith(("Rss:", "Pss:"))}
        return values.get("Rss", 0), values.get("Pss", 0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), None
    except (OSError, ValueError, IndexError):
        return 0, None


class ProcServerMemory:
    """ServerMemory from /proc: a native server is its postmaster's process tree; a container's
    processes are those whose cgroup names the container id."""

    def memory(self, servers: Sequence[ServerRef]) -> MemoryUse:
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, parent in table.items():
            children.setdefault(parent, []).append(pid)
        roots = {int(s.ref) for s in servers if s.runtime == "native" and s.ref.isdigit() and int(s.ref) in table}
        containers = [s.ref for s in servers if s.runtime != "native" and len(s.ref) >= 12]
        found: set[int] = set()
        pending = list(roots)
        while pending:
            pid = pending.pop()
            if pid not in found:
                found.add(pid)
                pending += children.get(pid, [])
        if containers:
            found |= {pid for pid in table if any(_in_container(pid, c) for c in containers)}
        rss, pss, readable = 0, 0, True
        for pid in found:
            resident, proportional = _rollup(pid)
            rss += resident
            if proportional is None:
                readable = False
            else:
                pss += proportional
        return MemoryUse(processes=len(found), rss_bytes=rss, pss_bytes=pss if readable else None)
