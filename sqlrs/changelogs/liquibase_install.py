"""Finding the Liquibase installation and starting it: the engine client (keying changesets by
Liquibase's version) and the engine (the `LiquibaseLauncher` port of `prepare:lb`'s executor) both
use it; stdlib only.

sqlrs uses a real open-source Liquibase 4.x CLI on the host (scripts/install.sh installs the npm
package `liquibase`, which carries the whole distribution with the PostgreSQL JDBC driver, under
/opt/sqlrs/liquibase). Where to find it: config `runtime.liquibase.path` (env `SQLRS_LIQUIBASE`),
then `liquibase` on PATH, then that prefix. A path may name the launcher script, the Liquibase
home (the directory holding it) or an npm prefix.

Its version comes from liquibase-core.jar's manifest: enough to key states, without a JVM.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from sqlrs.domain.errors import UsageError

DEFAULT_PREFIX = Path("/opt/sqlrs/liquibase")
NPM_HOME = Path("node_modules/liquibase/dist/liquibase")
CORE_JARS = ("internal/lib/liquibase-core.jar", "liquibase-core.jar", "liquibase.jar", "lib/liquibase-core.jar")
MAIN_CLASS = "liquibase.integration.commandline.LiquibaseCommandLine"
# drivers of other databases and the commercial extension: the distribution's launcher puts them on
# the classpath, and scanning them costs a JVM start about two thirds of its time (measured: 38 s
# with the launcher, 12 s without them, on this loaded machine); PostgreSQL needs none of them
NOT_NEEDED = frozenset({"h2.jar", "hsqldb.jar", "jaybird.jar", "jcc.jar", "mariadb-java-client.jar",
                        "mssql-jdbc.jar", "ojdbc8.jar", "snowflake-jdbc.jar", "sqlite-jdbc.jar",
                        "liquibase-commercial.jar"})
HINT = ("install it with ./scripts/install.sh (Java + the npm package liquibase under /opt/sqlrs/liquibase), "
        "or point config runtime.liquibase.path / env SQLRS_LIQUIBASE at a Liquibase 4.x launcher")


def _launcher_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    for candidate in (path / "liquibase", path / NPM_HOME / "liquibase"):
        if candidate.is_file():
            return candidate
    return None


def find_launcher(configured: str | None) -> Path:
    """The `liquibase` launcher to use; a UsageError with a hint when there is none."""
    if configured:
        found = _launcher_in(Path(configured).expanduser())
        if found is None:
            raise UsageError(f"no Liquibase at {configured} (config runtime.liquibase.path / SQLRS_LIQUIBASE)",
                             hint=HINT)
        return found.absolute()
    on_path = shutil.which("liquibase")
    if on_path:
        return Path(on_path)
    found = _launcher_in(DEFAULT_PREFIX)
    if found is None:
        raise UsageError("Liquibase is not installed", hint=HINT)
    return found


def home(launcher: Path) -> Path:
    return Path(os.path.realpath(launcher)).parent


def version(launcher: Path) -> str:
    """Liquibase's version, read from its core jar's manifest."""
    base = home(launcher)
    for relative in CORE_JARS:
        jar = base / relative
        if jar.is_file():
            try:
                with zipfile.ZipFile(jar) as archive:
                    manifest = archive.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
            except (OSError, KeyError, zipfile.BadZipFile):
                continue
            for line in manifest.splitlines():
                name, _, value = line.partition(":")
                if name.strip() in ("Liquibase-Version", "Bundle-Version") and value.strip():
                    return value.strip()
    raise UsageError(f"cannot tell the version of the Liquibase at {launcher} (no liquibase-core.jar beside it)",
                     hint=HINT)


def check_supported(found: str, launcher: Path) -> None:
    major = found.split(".", 1)[0]
    if major != "4":
        raise UsageError(f"Liquibase {found} at {launcher}: sqlrs supports Liquibase 4.x", hint=HINT)


def command(launcher: Path, java: str | None = None) -> list[str]:
    """argv that starts Liquibase: java with the jars PostgreSQL needs when the distribution's
    layout is known (much faster to start), else the launcher itself."""
    lib = home(launcher) / "internal" / "lib"
    java = java or find_java()
    if java is None or not (lib / "liquibase-core.jar").is_file():
        return [str(launcher)]
    jars = sorted(p for p in lib.glob("*.jar") if p.name not in NOT_NEEDED)
    extensions = sorted((home(launcher) / "lib").glob("*.jar"))  # the user's own extensions and drivers
    classpath = os.pathsep.join(str(p) for p in [*jars, *extensions])
    return [java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xshare:auto", "-cp", classpath, MAIN_CLASS]


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return os.path.join(java_home, "bin", "java")
    return shutil.which("java")


def disk_reader(root: Path) -> tuple[Callable[[str], str | None], Callable[[str], list[str] | None]]:
    """read/listdir of logical paths below `root` (the search path), for `read_project`."""

    def inside(path: str) -> Path:
        if path == ".." or path.startswith("../"):
            raise UsageError(f"{path}: outside the search path {root}",
                             hint="every changelog and data file must be below --search-path")
        return root / path

    def read(path: str) -> str | None:
        target = inside(path)
        try:
            return target.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None

    def listdir(directory: str) -> list[str] | None:
        base = inside(directory) if directory else root
        if not base.is_dir():
            return None
        return [p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file()]

    return read, listdir
