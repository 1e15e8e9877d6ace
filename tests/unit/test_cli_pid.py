"""The CLI's own pid check (sqlrs/entrypoints/cli/client.py)."""

from __future__ import annotations

import os
import subprocess
import time


def test_the_cli_pid_check_agrees_with_the_adapters() -> None:
    """One pid check (sqlrs/procfs.py, stdlib only) serves the CLI and the adapters; a zombie is dead."""
    from sqlrs.adapters.pgfiles import pid_alive as adapters
    from sqlrs.entrypoints.cli.client import pid_alive as cli

    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 60
    while adapters(zombie.pid) and time.monotonic() < deadline:  # exited, not reaped yet
        time.sleep(0.01)
    for pid in (os.getpid(), 1, zombie.pid, 2**22 + 12345):
        assert cli(pid) == adapters(pid), pid
    assert cli(os.getpid()) and not cli(zombie.pid)
    zombie.wait()
    assert cli(zombie.pid) == adapters(zombie.pid)
