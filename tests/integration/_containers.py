"""Asking docker and podman (through their CLIs, not sqlrs) which containers a state dir owns."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CONTAINER_RUNTIMES = ("docker", "podman")


def container_runtime_available(name: str) -> tuple[bool, str]:
    """Whether sqlrs' adapter for `name` reaches its daemon (the same probe the engine uses)."""
    try:
        if name == "docker":
            from sqlrs.adapters.containers.docker import DockerRuntime

            probe = DockerRuntime().probe()
        else:
            from sqlrs.adapters.containers.podman import PodmanRuntime

            probe = PodmanRuntime().probe()
    except Exception as exc:  # the SDK itself is missing or broken
        return False, f"{type(exc).__name__}: {exc}"
    return probe.available, probe.reason


def containers(state_dir: Path, *labels: str, tools: tuple[str, ...] = CONTAINER_RUNTIMES) -> list[str]:
    """`<tool>:<id>` of every container (running or not) labelled with this state dir (and `labels`)."""
    found: list[str] = []
    for tool in tools:
        if shutil.which(tool) is None:
            continue
        filters = ["--filter", f"label=sqlrs.state_dir={state_dir}"]
        for label in labels:
            filters += ["--filter", f"label={label}"]
        result = subprocess.run([tool, "ps", "-a", "-q", "--no-trunc", *filters], capture_output=True, text=True,
                                check=False, timeout=60)
        found += [f"{tool}:{cid}" for cid in result.stdout.split()]
    return found


def remove_containers(refs: list[str]) -> None:
    """Force-remove `<tool>:<id>` containers (test clean-up after a failure)."""
    for ref in refs:
        tool, _, cid = ref.partition(":")
        subprocess.run([tool, "rm", "-f", cid], capture_output=True, check=False, timeout=60)
