"""How a PostgreSQL server lives in a container: paths, labels, names and container definitions.

A server runs in one detached container per instance, built from the image the identity names:

- the host data directory is bind-mounted read-write at /var/lib/postgresql/data (PGDATA),
- the host run directory at /var/run/postgresql, so the Unix socket `.s.PGSQL.<port>` and the
  server log `postgres.log` appear in the host run directory, as with the native runtime,
- the host scripts directory (inside the run directory) again, read-only, at /sqlrs/scripts,
- the server listens on `<port>` inside the container, published on 127.0.0.1:<port> only.

The image must follow the official `postgres` image's contract: postgres binaries on PATH, a
`postgres` user, `sh`, `id`, `cat`, `kill` and `sleep`. Entrypoints are always overridden, so
the image's `docker-entrypoint.sh` never runs (it would initdb into its own PGDATA).

Everything here is pure: container definitions as values, for any backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlrs.adapters.containers.backend import ContainerConfig, Mount
from sqlrs.domain.errors import RuntimeFailure
from sqlrs.ports.runtime import InstanceSpec

DEFAULT_IMAGE = "postgres:17"
PGDATA = "/var/lib/postgresql/data"
RUN_DIR = "/var/run/postgresql"
SCRIPTS_DIR = "/sqlrs/scripts"
SERVER_LOG = "postgres.log"
SHM_SIZE = "256m"

LABEL_PREFIX = "sqlrs."
LABEL_INSTANCE = "sqlrs.instance"
LABEL_DATA_DIR = "sqlrs.data_dir"
LABEL_RUN_DIR = "sqlrs.run_dir"
LABEL_ROLE = "sqlrs.role"  # "server" | "initdb" | "inspect"
LABEL_PORT = "sqlrs.port"

# Settings the container layout needs: the caller's values for them are ignored.
_FIXED_SETTINGS = ("port", "listen_addresses", "unix_socket_directories")
_NAME_RE = re.compile(r"[^a-zA-Z0-9_.-]")

# Asked once per image: its PostgreSQL version and the uid/gid of its postgres user.
FACTS_SCRIPT = "postgres --version && id -u postgres && id -g postgres"


def container_name(instance_id: str) -> str:
    return "sqlrs-" + _NAME_RE.sub("-", instance_id)


def server_config(spec: InstanceSpec, image_id: str, labels: Mapping[str, str]) -> ContainerConfig:
    """The container of the instance's server; `labels` are the runtime's own extra labels."""
    argv: list[str] = ["-D", PGDATA, "-p", str(spec.port)]
    for key, value in spec.settings.items():
        if key not in _FIXED_SETTINGS:
            argv += ["-c", f"{key}={value}"]
    argv += ["-c", "listen_addresses=*", "-c", f"unix_socket_directories={RUN_DIR}"]
    return ContainerConfig(
        image=image_id,
        # postgres stays PID 1 (exec); its output goes to the run dir like the native runtime's
        entrypoint=("sh", "-c", f'exec "$0" "$@" >>{RUN_DIR}/{SERVER_LOG} 2>&1', "postgres"),
        command=tuple(argv),
        user="postgres",
        name=container_name(spec.instance_id),
        labels={
            **labels,
            LABEL_ROLE: "server",
            LABEL_INSTANCE: spec.instance_id,
            LABEL_DATA_DIR: str(spec.data_dir),
            LABEL_RUN_DIR: str(spec.run_dir),
            LABEL_PORT: str(spec.port),
        },
        mounts=(
            Mount(str(spec.data_dir), PGDATA),
            Mount(str(spec.run_dir), RUN_DIR),
            Mount(str(spec.scripts_dir), SCRIPTS_DIR, read_only=True),
        ),
        ports={spec.port: ("127.0.0.1", spec.port)},
        shm_size=SHM_SIZE,
        stop_signal="SIGINT",
    )


def _one_shot_labels(labels: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    return {**labels, LABEL_ROLE: "initdb", LABEL_DATA_DIR: str(data_dir)}


def chown_config(image_id: str, labels: Mapping[str, str], data_dir: Path) -> ContainerConfig:
    """A one-shot container handing `data_dir` to the image's postgres user (engine not root)."""
    return ContainerConfig(
        image=image_id,
        entrypoint=("sh", "-c", f"chown postgres:postgres {PGDATA} && chmod 0700 {PGDATA}"),
        command=(),
        user="0",
        labels=_one_shot_labels(labels, data_dir),
        mounts=(Mount(str(data_dir), PGDATA),),
        network=False,
    )


def initdb_config(
    image_id: str, labels: Mapping[str, str], data_dir: Path, options: Sequence[str]
) -> ContainerConfig:
    return ContainerConfig(
        image=image_id,
        entrypoint=("initdb",),
        command=("-D", PGDATA, "-U", "postgres", *options),
        user="postgres",
        labels=_one_shot_labels(labels, data_dir),
        mounts=(Mount(str(data_dir), PGDATA),),
        network=False,
    )


def facts_config(image_id: str, labels: Mapping[str, str]) -> ContainerConfig:
    return ContainerConfig(
        image=image_id,
        entrypoint=("sh", "-c", FACTS_SCRIPT),
        command=(),
        user="0",
        labels={**labels, LABEL_ROLE: "inspect"},
        network=False,
    )


def tool_command(tool: str, args: Sequence[str], pidfile: str) -> list[str]:
    """The exec command of a tool: it writes its pid to `pidfile` first, so it can be killed."""
    return ["sh", "-c", f'echo $$ >{pidfile}; exec "$0" "$@"', tool, *args]


def tool_environment(spec: InstanceSpec, env: Mapping[str, str] | None) -> dict[str, str]:
    return {
        "PGHOST": RUN_DIR,
        "PGPORT": str(spec.port),
        "PGUSER": "postgres",
        "PGDATABASE": "postgres",
        **(env or {}),
    }


def kill_script(pidfile: str) -> str:
    """Shell run inside the container: SIGINT (psql cancels its query), then TERM, then KILL."""
    return (
        f'f={pidfile}; i=0; while [ ! -s "$f" ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; '
        '[ -s "$f" ] || exit 0; pid=$(cat "$f"); '
        "for sig in INT TERM KILL; do "
        'kill -s $sig "$pid" 2>/dev/null || break; i=0; '
        'while kill -0 "$pid" 2>/dev/null && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -0 "$pid" 2>/dev/null || break; done; rm -f "$f"'
    )


def tool_path(spec: InstanceSpec, host_path: Path) -> str:
    """Where a file of the host scripts directory is seen inside the container."""
    try:
        relative = Path(os.path.abspath(host_path)).relative_to(os.path.abspath(spec.scripts_dir))
    except ValueError:
        raise RuntimeFailure(
            f"{host_path} is not under the instance's scripts directory {spec.scripts_dir}"
        ) from None
    return SCRIPTS_DIR if str(relative) == "." else f"{SCRIPTS_DIR}/{relative.as_posix()}"
