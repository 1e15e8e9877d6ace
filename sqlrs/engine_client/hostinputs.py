"""Steps of the host kinds, read on the caller's side: Alembic revisions and commands.

Shared by the CLI (`prepare:alembic`, `prepare:exec`) and the library (`Client.build(alembic=...)`).
What keys a step (`keyed`) is content: a revision file's and env.py's syntax tree
(`sqlrs.domain.pysource`: comments and formatting do not count), alembic.ini's options, or a
command line plus the content of its declared inputs. Paths, the working directory and the
environment only say how to run it (`run`) and never enter the key, so a project checked out
elsewhere, or another user's shell, finds the same states.
"""

from __future__ import annotations

import configparser
import glob
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NamedTuple

from sqlrs.engine_client.errors import ClientError, usage

# The main section of alembic.ini and the option sqlrs replaces: it does not change what a
# revision does, and it may hold someone's local password.
ALEMBIC_SECTION = "alembic"
ALEMBIC_URL = "sqlalchemy.url"


def caller_env() -> list[list[str]]:
    """This process's environment for the tool, without connection settings (the engine sets them)."""
    return [[name, value] for name, value in sorted(os.environ.items())
            if not name.startswith("PG") and name != "DATABASE_URL"]


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def python_file_key(path: Path) -> str:
    """A Python input's key: its syntax tree (sqlrs.domain.pysource), not its bytes."""
    from sqlrs.domain.pysource import python_source_key

    return python_source_key(path.read_bytes())


def host_step(kind: str, source: str, keyed: list[tuple[str, str]], cwd: Path, argv: list[str],
              params: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A step of a host kind as the engine's API takes it, with its content digest."""
    from sqlrs.domain.keys import digest

    pairs = [[name, value] for name, value in keyed]
    return {"kind": kind, "source": source, "keyed": pairs, "digest": digest(pairs),
            "run": {"cwd": str(cwd), "argv": list(argv), "env": caller_env(),
                    "params": [[name, value] for name, value in params or ()]}}


def _display(path: Path, cwd: Path) -> str:
    return os.path.relpath(path, cwd) if path.is_absolute() else str(path)


# -- exec --------------------------------------------------------------------------------------------
def exec_steps(argv: list[str], inputs: list[str], cwd: Path) -> list[dict[str, Any]]:
    """One step: the command line and the content of the files the `inputs` globs match."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise usage("no command to run", hint="sqlrs prepare:exec --input 'migrations/*.sql' -- ./migrate.sh up")
    files: dict[str, Path] = {}
    for pattern in inputs:
        matches = sorted(glob.glob(pattern, root_dir=cwd, recursive=True))
        if not matches:
            raise usage(f"--input {pattern}: matches no file",
                        hint="globs are relative to the current directory; ** matches subdirectories")
        for match in matches:
            path = cwd / match
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for item in found:
                files[Path(os.path.relpath(item, cwd)).as_posix()] = item
    keyed = [("arg", arg) for arg in argv]
    for relative in sorted(files):
        try:
            keyed.append(("input:" + relative, file_sha256(files[relative])))
        except OSError as exc:
            raise usage(f"--input {relative}: cannot read: {exc.strerror}") from None
    return [host_step("exec", shlex.join(argv), keyed, cwd, argv)]


# -- alembic -----------------------------------------------------------------------------------------
def ini_digest(path: Path) -> str:
    """alembic.ini as Alembic reads it (comments and layout aside), without sqlalchemy.url."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError):
        return file_sha256(path)  # Alembic will complain; the bytes key it meanwhile
    from sqlrs.domain.keys import digest

    sections = [[section, [[option, value or ""] for option, value in parser.items(section)
                           if not (section == ALEMBIC_SECTION and option == ALEMBIC_URL)]]
                for section in parser.sections()]
    return digest(sections)


def alembic_steps(config: str, to: str | None, cwd: Path, python: str | None = None) -> list[dict[str, Any]]:
    """One step per revision from base to `to` (default: every head), in Alembic's own order."""
    ini = Path(config) if Path(config).is_absolute() else cwd / config
    if not ini.is_file():
        raise usage(f"{config}: no such Alembic config",
                    hint="run in the project directory or give -c path/to/alembic.ini")
    listed = _alembic_revisions(ini, to, cwd)
    if not listed.revisions:
        raise usage(f"no Alembic revisions in {listed.script_dir}", hint="create one with: alembic revision -m '...'")
    env_py = Path(listed.env_py)
    env_digest = python_file_key(env_py) if env_py.is_file() else ""
    ini_key = ini_digest(ini)
    steps = []
    for revision, file in listed.revisions:
        path = Path(file)
        shown = _display(path, cwd)
        keyed = [("revision", revision), ("revision_file", python_file_key(path)),
                 ("env.py", env_digest), ("alembic.ini", ini_key)]
        steps.append(host_step("alembic", f"{revision} {shown}", keyed, cwd, [python or sys.executable],
                               [("config", str(ini)), ("revision", revision), ("file", shown)]))
    return steps


class AlembicRevisions(NamedTuple):
    revisions: list[tuple[str, str]]  # (revision id, its file), from base to the target, in Alembic's order
    env_py: str
    script_dir: str


def _alembic_revisions(ini: Path, to: str | None, cwd: Path) -> AlembicRevisions:
    """The revisions as Alembic orders them: from a cache file while no file of the project's
    Alembic directory (nor alembic.ini, nor `to`) changed, else read by Alembic itself. Importing
    Alembic and reading the revisions costs every `prepare:alembic` and test session ~0.8 s;
    the cache a few milliseconds, the files' hash included."""
    fingerprint = _alembic_fingerprint(ini, to, cwd)
    cache = _alembic_cache_file(ini, cwd)
    if fingerprint is not None:
        try:
            with open(cache, encoding="utf-8") as handle:
                data = json.load(handle)
            if data["fingerprint"] == fingerprint:
                return AlembicRevisions([(str(r), str(f)) for r, f in data["revisions"]], data["env_py"],
                                        data["script_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    listed = _read_alembic_revisions(ini, to, cwd)
    if fingerprint is not None:
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            partial = f"{cache}.{os.getpid()}"
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump({"fingerprint": fingerprint, **listed._asdict()}, handle)
            os.replace(partial, cache)
        except OSError:
            pass  # a read-only home: Alembic reads them again next time
    return listed


def _alembic_fingerprint(ini: Path, to: str | None, cwd: Path) -> str | None:
    """A hash of everything the revision order depends on, or None when that is not only the
    script directory's files (a package resource, version_locations elsewhere, interpolation)."""
    parser = configparser.RawConfigParser()
    try:
        text = ini.read_bytes()
        parser.read_string(text.decode("utf-8"), source=str(ini))
        options = dict(parser.items(ALEMBIC_SECTION))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    location = (options.get("script_location") or "").replace("%(here)s", str(ini.parent))
    if not location or ":" in location or "%(" in location or options.get("version_locations") \
            or options.get("recursive_version_locations"):
        return None
    directory = Path(location) if Path(location).is_absolute() else cwd / location
    digest = hashlib.sha256()
    for part in (text, str(to).encode(), str(cwd).encode(), str(directory).encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    try:
        files = sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)
        for path in files:
            for part in (str(path.relative_to(directory)).encode(), path.read_bytes()):
                digest.update(len(part).to_bytes(8, "big") + part)
    except OSError:
        return None
    return digest.hexdigest()


def _alembic_cache_file(ini: Path, cwd: Path) -> str:
    from sqlrs.extensions import cache_dir

    project = hashlib.sha256(f"{ini.resolve()}\0{cwd}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"alembic-{project}.json")


def _read_alembic_revisions(ini: Path, to: str | None, cwd: Path) -> AlembicRevisions:
    """What Alembic says (imports it: it must be installed where sqlrs is)."""
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError
    except ImportError:
        raise usage(f"Alembic is not installed in the Python environment of sqlrs ({sys.executable})",
                    hint="install sqlrs into your project's environment (pip install sqlrs alembic)") from None
    cfg = Config(str(ini))
    location = cfg.get_main_option("script_location")
    if not location:
        raise usage(f"{ini}: no script_location in the [{cfg.config_ini_section}] section")
    if ":" not in location and not Path(location).is_absolute():
        # Alembic resolves it against the cwd: the cwd of this step, not of this process
        cfg.set_main_option("script_location", str(cwd / location))
    try:
        script = ScriptDirectory.from_config(cfg)
        revisions = list(script.walk_revisions("base", to or "heads"))
    except CommandError as exc:
        raise usage(f"alembic: {exc}", hint="--to takes a revision id, a unique prefix, head or heads") from None
    except Exception as exc:  # a revision file that does not import, say
        raise ClientError(f"alembic could not read the revisions: {type(exc).__name__}: {exc}") from None
    revisions.reverse()  # walk_revisions goes from the heads down
    return AlembicRevisions([(revision.revision, revision.path) for revision in revisions],
                            script.env_py_location, str(script.dir))
