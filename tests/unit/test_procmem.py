"""The servers' memory from /proc (adapters/procmem.py), on real processes: a process tree stands
in for a postmaster and its backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sqlrs.adapters.procmem import ProcServerMemory
from sqlrs.ports.processes import ServerRef


def test_a_native_server_counts_its_whole_process_tree() -> None:
    # a parent with two children, like a postmaster with its backends
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "kids = [subprocess.Popen(['sleep', '60']) for _ in range(2)]; "
                               "print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own process group: killed as one below
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "up"
        alone = ProcServerMemory().memory([ServerRef("native", str(parent.pid))])
        assert alone.processes == 3
        assert alone.rss_bytes > 1 << 20
        assert alone.pss_bytes is not None and 0 < alone.pss_bytes <= alone.rss_bytes  # our own: readable
        both = ProcServerMemory().memory([ServerRef("native", str(parent.pid)), ServerRef("native", str(os.getpid()))])
        assert both.processes >= alone.processes + 1
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_servers_that_are_gone_count_nothing() -> None:
    memory = ProcServerMemory().memory([ServerRef("native", "999999999"), ServerRef("native", ""),
                                        ServerRef("docker", "0123456789abcdef0123456789abcdef")])
    assert (memory.processes, memory.rss_bytes, memory.pss_bytes) == (0, 0, 0)
