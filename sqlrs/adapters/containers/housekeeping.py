"""The containers sqlrs leaves on a host: finding them by label, removing them, and keeping two
servers off one data directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlrs.adapters.containers import backend as backend_rules
from sqlrs.adapters.containers.backend import ContainerBackend, failure, wait_exit
from sqlrs.adapters.containers.layout import LABEL_DATA_DIR, LABEL_ROLE
from sqlrs.adapters.pgfiles import is_postgres, pid_alive, read_postmaster_pid
from sqlrs.domain.errors import RuntimeFailure


def leftovers(backend: ContainerBackend, labels: Mapping[str, str | None] | None = None) -> list[str]:
    """Ids of containers sqlrs made: all of them, or those carrying `labels`."""
    wanted: dict[str, str | None] = {LABEL_ROLE: None}
    wanted.update(labels or {})
    try:
        return backend.find(wanted)
    except Exception as exc:
        raise failure(backend, "cannot list containers", exc) from exc


def remove_container(backend: ContainerBackend, ref: str) -> None:
    """Kill and remove one container; a missing one is fine."""
    try:
        backend.remove(ref)
    except Exception:
        # the removal may have raced the container's exit: once it shows as exited, try again
        try:
            wait_exit(backend, ref, backend_rules.EXIT_RACE_SECONDS)
            backend.remove(ref)
        except Exception as exc:
            raise failure(backend, f"cannot remove container {ref[:12]}", exc) from exc


def claim_data_dir(backend: ContainerBackend, data_dir: Path, name: str) -> None:
    """Make way for a new server container `name` on `data_dir`, or refuse (RuntimeFailure).

    Two servers on one data directory would corrupt it (each is PID 1 in its own namespace,
    so PostgreSQL's postmaster.pid interlock cannot see the other): a running server container
    on it is refused. A stopped container of the same name is removed; a stale lock cleared.
    SDK errors propagate as they are.
    """
    running = backend.find({LABEL_DATA_DIR: str(data_dir), LABEL_ROLE: "server"}, running_only=True)
    if running:
        raise RuntimeFailure(f"{backend.name}: container {running[0][:12]} already runs a server on {data_dir}")
    stale = backend.state(name)
    if stale is not None:
        if stale.running:
            raise RuntimeFailure(f"{backend.name}: container {name} is already running")
        backend.remove(name)
    clear_stale_lock(backend.name, data_dir)


def clear_stale_lock(runtime: str, data_dir: Path) -> None:
    """Remove the postmaster.pid a vanished container left behind.

    A killed container leaves a postmaster.pid saying `ready`, which would make the caller
    believe the new server is up before it is. The file's interlock protects nothing here:
    a containerized postmaster is PID 1 in its own namespace, so a new one would take the
    file over anyway. Only a live postgres process on this host (a native server) keeps it.
    """
    lock = data_dir / "postmaster.pid"
    info = read_postmaster_pid(data_dir)
    if info is None:
        if lock.exists():  # unreadable or half-written: stale too
            lock.unlink(missing_ok=True)
        return
    pid = info[0]
    if pid > 1 and pid_alive(pid) and is_postgres(pid, unknown=True):
        raise RuntimeFailure(f"{runtime}: a postgres process (pid {pid}) on this host already uses {data_dir}")
    lock.unlink(missing_ok=True)
