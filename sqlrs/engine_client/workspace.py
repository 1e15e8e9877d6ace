"""The workspace: the project directory sqlrs reads inputs from, and its own configuration.

One loader for the CLI, the library and the pytest plugin:

- The **root** bounds which files a command may read (`--allow-outside` lifts it): `--workspace DIR`
  (env `SQLRS_WORKSPACE`), else the nearest directory at or above the start directory holding a
  `.sqlrs/` directory (the upstream sqlrs' workspace marker), else the nearest git root, else
  the start directory itself.
- The **configuration** is `.sqlrs/config.yaml` at the root (the upstream's file; keys sqlrs does
  not know are ignored, as the upstream keeps engine and profile settings there too) and
  `[tool.sqlrs]` of the nearest `pyproject.toml` between the start directory and the root; the
  YAML file wins where both set a key. Keys (docs/cli.md, "Workspace configuration"):
  `postgres.version` (a PostgreSQL major, e.g. 16), `postgres.superuser` (`postgres` or `sqlrs`,
  the cluster's bootstrap superuser), `dbms.image` (the default container image) and
  `liquibase.exec` (the Liquibase launcher).

Standard library only and no pathlib: `prepare:psql` reads it on the CLI's fast path
(decisions/0003). PyYAML is imported only when a `.sqlrs/config.yaml` exists, tomllib only when
a `pyproject.toml` mentions `[tool.sqlrs`.
"""

from __future__ import annotations

import os

from sqlrs.engine_client.errors import usage

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from typing import Any

ENV_WORKSPACE = "SQLRS_WORKSPACE"
ENV_POSTGRES_VERSION = "SQLRS_POSTGRES_VERSION"
MARKER = ".sqlrs"
CONFIG_FILE = "config.yaml"
PYPROJECT = "pyproject.toml"
SUPERUSERS = ("postgres", "sqlrs")
# the keys sqlrs reads, each with what it takes (for the one-line error when a value does not fit)
KEYS = {
    "postgres.version": "a PostgreSQL major version, e.g. 16",
    "postgres.superuser": "postgres or sqlrs",
    "dbms.image": "a container image reference, e.g. postgres:17",
    "liquibase.exec": "the path of the Liquibase launcher",
}


def find_root(start: str, explicit: str | None = None) -> str:
    """The workspace root for a command started in `start` (see the module docstring)."""
    given = explicit or os.environ.get(ENV_WORKSPACE) or None
    if given:
        return os.path.abspath(os.path.join(start, given))
    git_root = None
    directory = os.path.abspath(start)
    while True:
        if os.path.isdir(os.path.join(directory, MARKER)):
            return directory
        if git_root is None and os.path.exists(os.path.join(directory, ".git")):
            git_root = directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return git_root or os.path.abspath(start)
        directory = parent


class Settings:
    """A workspace's root and configuration values (dotted keys), with the files they came from."""

    def __init__(self, root: str, values: dict[str, Any], sources: list[str]):
        self.root = root
        self.values = values
        self.sources = sources

    def get(self, key: str) -> Any:
        return self.values.get(key)

    @property
    def postgres_version(self) -> str | None:
        return self.values.get("postgres.version")

    @property
    def superuser(self) -> str | None:
        return self.values.get("postgres.superuser")

    @property
    def image(self) -> str | None:
        return self.values.get("dbms.image")

    def request_fields(self, image: str | None, postgres_version: str | None = None) -> dict[str, Any]:
        """What this workspace adds to a prepare job's request body: the image unless the command
        names one, the PostgreSQL major (`postgres_version`, else SQLRS_POSTGRES_VERSION, else
        postgres.version) and the bootstrap superuser; absent keys are left out."""
        fields: dict[str, Any] = {}
        chosen_image = image or self.image
        if chosen_image:
            fields["image"] = chosen_image
        version = choose_postgres_version(self, postgres_version)
        if version:
            fields["postgres_version"] = version
        if self.superuser:
            fields["superuser"] = self.superuser
        return fields


def choose_postgres_version(settings: Settings | None, explicit: str | None = None,
                            suite: str | None = None) -> str | None:
    """The PostgreSQL major a request asks for, most specific first: `explicit` (a library
    argument), env SQLRS_POSTGRES_VERSION (this run), `suite` (the pytest plugin's
    sqlrs_postgres_version), the workspace's postgres.version; None: the engine's default."""
    for where, value in (("the argument", explicit), (ENV_POSTGRES_VERSION, os.environ.get(ENV_POSTGRES_VERSION)),
                         ("sqlrs_postgres_version", suite)):
        if value not in (None, ""):
            return check_version(str(value), where)
    return settings.postgres_version if settings is not None else None


def check_version(value: str, where: str) -> str:
    text = value.strip()
    if not text.isdigit() or not 9 < int(text) < 100:
        raise usage(f"{where}: PostgreSQL version {value!r} is not a major version",
                    hint="give the major only, e.g. 16")
    return str(int(text))


_cache: dict[tuple[str, str | None, str | None], Settings] = {}


def load(start: str | None = None, explicit_root: str | None = None) -> Settings:
    """The settings of the workspace `start` (default: the cwd) belongs to; read once per process."""
    start = os.path.abspath(start or os.getcwd())
    key = (start, explicit_root, os.environ.get(ENV_WORKSPACE))
    if key not in _cache:
        root = find_root(start, explicit_root)
        values: dict[str, Any] = {}
        sources: list[str] = []
        pyproject = _nearest_pyproject(start, root)
        if pyproject is not None:
            values.update(_checked(_flatten(_read_pyproject(pyproject)), pyproject))
            sources.append(pyproject)
        yaml_path = os.path.join(root, MARKER, CONFIG_FILE)
        if os.path.isfile(yaml_path):
            values.update(_checked(_flatten(_read_yaml(yaml_path)), yaml_path))
            sources.append(yaml_path)
        _cache[key] = Settings(root, values, sources)
    return _cache[key]


def _nearest_pyproject(start: str, root: str) -> str | None:
    """The nearest pyproject.toml with a [tool.sqlrs] table, from `start` up to `root`."""
    directory = start
    while True:
        candidate = os.path.join(directory, PYPROJECT)
        if os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as handle:
                    if b"[tool.sqlrs" in handle.read():
                        return candidate
            except OSError:
                pass
        parent = os.path.dirname(directory)
        if directory == root or parent == directory or not (directory + os.sep).startswith(root + os.sep):
            return None
        directory = parent


def _read_pyproject(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise usage(f"{path}: cannot read it: {exc}") from None
    table = data.get("tool", {}).get("sqlrs", {})
    return table if isinstance(table, dict) else {}


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise usage(f"{path}: not a readable YAML file: {message}",
                    hint="fix or remove the workspace configuration") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise usage(f"{path}: expected a mapping of settings, not a {type(data).__name__}")
    return data


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"postgres": {"version": 16}} -> {"postgres.version": 16} (dotted keys as written stay)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _checked(values: dict[str, Any], path: str) -> dict[str, Any]:
    """The keys sqlrs reads, as strings; others are left out (the upstream keeps more there)."""
    checked: dict[str, Any] = {}
    for key, what in KEYS.items():
        value = values.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise usage(f"{path}: {key} takes {what}, not {value!r}")
        text = str(value).strip()
        if key == "postgres.version":
            text = check_version(text, f"{path}: {key}")
        elif key == "postgres.superuser" and text not in SUPERUSERS:
            raise usage(f"{path}: {key} takes {what}, not {text!r}")
        checked[key] = text
    return checked
