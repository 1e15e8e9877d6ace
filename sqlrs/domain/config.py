"""Configuration keys, their types, defaults and meaning (served at /v1/config/schema)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from sqlrs.domain.errors import UsageError
from sqlrs.domain.sizes import parse_size


@attrs.frozen
class ConfigKey:
    name: str
    type: str  # "string" | "integer" | "boolean"
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    env: str | None = None  # environment variable that overrides the stored value
    # read once when the engine starts (the store, the idle timer): a change waits for a restart
    restart: bool = False
    # an entry point group (sqlrs.extensions) whose names are choices too, after `choices`
    names_of: str | None = None
    keywords: tuple[str, ...] = ()  # words taken besides values of the type (e.g. "auto")

    def all_choices(self, names: Names) -> tuple[str, ...]:
        return (*self.choices, *names(self.names_of)) if self.names_of else self.choices

    def parse(self, raw: Any, names: Names | None = None) -> Any:
        """Turn a CLI string or JSON value into this key's type; raise UsageError if it can't.
        `names` gives the names registered in an entry point group (`sqlrs.extensions.names`);
        a key with `names_of` needs it."""
        if isinstance(raw, str) and raw.lower() in self.keywords:
            return raw.lower()
        if self.type == "integer":
            if isinstance(raw, bool):
                raise UsageError(f"{self.name} takes an integer")
            if isinstance(raw, int):
                value: Any = raw
            else:
                try:
                    value = parse_size(str(raw))
                except ValueError:
                    also = "".join(f" or {word}" for word in self.keywords)
                    raise UsageError(f"{self.name} takes an integer (sizes like 10G are fine){also}, got {raw!r}") \
                        from None
            if value < 0:
                raise UsageError(f"{self.name} must not be negative")
            return value
        if self.type == "boolean":
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise UsageError(f"{self.name} takes true or false, got {raw!r}")
        value = str(raw)
        if self.names_of and names is None:
            raise TypeError(f"{self.name}: parse needs the names registered in {self.names_of}")
        choices = self.all_choices(names) if names is not None else self.choices
        if choices and value not in choices:
            raise UsageError(f"{self.name} must be one of {', '.join(choices)}, got {value!r}")
        return value


Names = Callable[[str], Sequence[str]]


KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("container.runtime", "string", "auto", "Runtime for new states and instances.",
              ("auto",), env="SQLRS_CONTAINER_RUNTIME", names_of="sqlrs.runtimes"),
    ConfigKey("dbms.image", "string", "postgres:17", "Container image for docker/podman runtimes.",
              env="SQLRS_IMAGE"),
    ConfigKey("runtime.native.pg_bin", "string", "",
              "Directory of PostgreSQL binaries for the native runtime, or embedded:16 / embedded:18; "
              "empty: discover (pg_config, /usr/lib/postgresql, embedded). Checked when set.", env="SQLRS_PG_BIN"),
    ConfigKey("runtime.liquibase.path", "string", "",
              "Liquibase 4.x for prepare:lb: its launcher, home directory or npm prefix; empty: liquibase on "
              "PATH, else /opt/sqlrs/liquibase (scripts/install.sh).", env="SQLRS_LIQUIBASE"),
    ConfigKey("runtime.native.user", "string", "postgres",
              "Unprivileged user that runs native servers when the engine runs as root."),
    ConfigKey("snapshot.backend", "string", "auto", "How states are cloned.",
              ("auto",), env="SQLRS_SNAPSHOT", restart=True, names_of="sqlrs.snapshot_stores"),
    ConfigKey("store.path", "string", "", "Snapshot store directory; empty: <state_dir>/store.", restart=True),
    ConfigKey("store.volume.image", "string", "", "Loopback image holding the store (set by `sqlrs init local`).",
              restart=True),
    ConfigKey("store.volume.fs", "string", "", "Filesystem of the loopback store volume.", ("", "btrfs", "xfs"),
              restart=True),
    ConfigKey("cache.capacity.max_bytes", "integer", "auto",
              "Upper bound of the state cache in bytes; auto: the smaller of 10 GiB and a tenth of the store's "
              "filesystem; 0: no bound.", keywords=("auto",)),
    ConfigKey("cache.capacity.reserve_bytes", "integer", 1024**3,
              "Free space to keep on the store's filesystem; states are evicted to keep it."),
    ConfigKey("engine.idle_timeout", "integer", 600,
              "Seconds without requests or running jobs after which the engine exits.",
              env="SQLRS_ENGINE_IDLE_TIMEOUT", restart=True),
    ConfigKey("jobs.history.max", "integer", 200, "Finished jobs kept (oldest dropped first)."),
    ConfigKey("instance.ttl_seconds", "integer", 0,
              "Default idle TTL of new instances: one with no client connected for this many seconds is "
              "stopped and removed; 0: instances live until removed. The engine stays up while instances "
              "with a TTL exist.", env="SQLRS_INSTANCE_TTL"),
    ConfigKey("cache.remote", "string", "",
              "OCI registry repository shared as a remote state cache, HOST[:PORT]/REPO: prepare pulls states "
              "found there instead of building them; push and pull default to it. Empty: none.",
              env="SQLRS_CACHE_REMOTE"),
    ConfigKey("cache.remote_push", "boolean", False,
              "Push every state prepare builds to cache.remote (for CI runners that fill the team's cache)."),
    ConfigKey("cache.remote_insecure", "boolean", False,
              "Speak plain HTTP to cache.remote (and push/pull references) on hosts other than loopback; "
              "127.0.0.1, ::1 and localhost always use plain HTTP, as docker does."),
    ConfigKey("databases.spares", "integer", 2,
              "Database instances: copies of the state's database made ahead in its shared server."),
    ConfigKey("databases.burst_spares", "integer", 16,
              "Database instances: while a state's databases are claimed quickly (a test suite), copies "
              "made ahead rise to the number claimed in the last 5 minutes, up to this many."),
    ConfigKey("databases.host_idle_seconds", "integer", 300,
              "A shared server with no database instance for this many seconds is stopped (sooner when its "
              "state is not one of the warm.idle_states most recently used ones)."),
    ConfigKey("warm.enabled", "boolean", True,
              "Keep started instances of recently used states ready, so that a cache hit claims one in "
              "milliseconds; false: no warm instances at all (explicit pools are refused).",
              env="SQLRS_WARM"),
    ConfigKey("warm.per_state", "integer", 1,
              "Warm instances kept per recently built or hit state; 0: none automatically (pools still work)."),
    ConfigKey("warm.max_states", "integer", 4, "How many of the most recently used states get warm instances."),
    ConfigKey("warm.max_instances", "integer", 8,
              "Upper bound of warm (started, not yet claimed) instances in all, pools included."),
    ConfigKey("warm.idle_seconds", "integer", 300,
              "Warm instances of a state (or a pool) nobody used or renewed for this many seconds are removed; "
              "an empty shared server of a state unused this long stops too."),
    ConfigKey("warm.idle_states", "integer", 2,
              "When no test session or burst of claims uses them, only this many of the most recently used "
              "states keep something started ahead (warm.per_state warm instances, or a shared server with "
              "databases.spares copies); a state superseded by a newer version of its chain keeps nothing."),
)
BY_NAME = {key.name: key for key in KEYS}


def lookup(name: str) -> ConfigKey:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown config key {name!r}", hint="keys: " + ", ".join(sorted(BY_NAME))) from None


def schema(names: Names) -> dict[str, Any]:
    """JSON Schema of the configuration object (`names`: as for `ConfigKey.parse`)."""
    properties: dict[str, Any] = {}
    for key in KEYS:
        prop: dict[str, Any] = {"type": key.type, "default": key.default, "description": key.description}
        if key.keywords:
            prop = {"anyOf": [{"type": key.type, "minimum": 0}, {"enum": list(key.keywords)}],
                    "default": key.default, "description": key.description}
        if key.all_choices(names):
            prop["enum"] = list(key.all_choices(names))
        if key.env:
            prop["x-env"] = key.env
        if key.restart:
            prop["x-restart"] = True
        properties[key.name] = prop
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": properties, "additionalProperties": False}
