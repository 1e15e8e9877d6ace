"""Configuration keys, their types, defaults and meaning (served at /v1/config/schema)."""

from __future__ import annotations

from typing import Any

import attrs

from sqlrs.domain.errors import UsageError


@attrs.frozen
class ConfigKey:
    name: str
    type: str  # "string" | "integer" | "boolean"
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    env: str | None = None  # environment variable that overrides the stored value

    def parse(self, raw: Any) -> Any:
        """Turn a CLI string or JSON value into this key's type; raise UsageError if it can't."""
        if self.type == "integer":
            if isinstance(raw, bool):
                raise UsageError(f"{self.name} takes an integer")
            if isinstance(raw, int):
                value: Any = raw
            else:
                try:
                    value = parse_size(str(raw))
                except ValueError:
                    raise UsageError(f"{self.name} takes an integer (sizes like 10G are fine), got {raw!r}") from None
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
        if self.choices and value not in self.choices:
            raise UsageError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}


def parse_size(text: str) -> int:
    """'10G' -> 10737418240; plain integers pass through. Raises ValueError."""
    stripped = text.strip().upper()
    number = stripped.rstrip("KMGTIB")
    unit = stripped[len(number):]
    if not number or unit not in _UNITS:
        raise ValueError(text)
    return int(float(number) * _UNITS[unit])


KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("container.runtime", "string", "auto", "Runtime for new states and instances.",
              ("auto", "docker", "podman", "native"), env="SQLRS_CONTAINER_RUNTIME"),
    ConfigKey("dbms.image", "string", "postgres:17", "Container image for docker/podman runtimes.",
              env="SQLRS_IMAGE"),
    ConfigKey("runtime.native.pg_bin", "string", "",
              "Directory of PostgreSQL binaries for the native runtime, or embedded:16 / embedded:18; "
              "empty: discover (pg_config, /usr/lib/postgresql, embedded).", env="SQLRS_PG_BIN"),
    ConfigKey("runtime.native.user", "string", "postgres",
              "Unprivileged user that runs native servers when the engine runs as root."),
    ConfigKey("snapshot.backend", "string", "auto", "How states are cloned.",
              ("auto", "btrfs", "reflink", "copy"), env="SQLRS_SNAPSHOT"),
    ConfigKey("store.path", "string", "", "Snapshot store directory; empty: <state_dir>/store."),
    ConfigKey("store.volume.image", "string", "", "Loopback image holding the store (set by `sqlrs init local`)."),
    ConfigKey("store.volume.fs", "string", "", "Filesystem of the loopback store volume.", ("", "btrfs", "xfs")),
    ConfigKey("cache.capacity.max_bytes", "integer", 0, "Upper bound of the state cache in bytes; 0: no bound."),
    ConfigKey("cache.capacity.reserve_bytes", "integer", 1024**3,
              "Free space to keep on the store's filesystem; states are evicted to keep it."),
    ConfigKey("engine.idle_timeout", "integer", 600,
              "Seconds without requests or running jobs after which the engine exits.",
              env="SQLRS_ENGINE_IDLE_TIMEOUT"),
    ConfigKey("jobs.history.max", "integer", 200, "Finished jobs kept (oldest dropped first)."),
    ConfigKey("instance.ttl_seconds", "integer", 0,
              "Default idle TTL of new instances: one with no client connected for this many seconds is "
              "stopped and removed; 0: instances live until removed. The engine stays up while instances "
              "with a TTL exist.", env="SQLRS_INSTANCE_TTL"),
    ConfigKey("warm.enabled", "boolean", True,
              "Keep started instances of recently used states ready, so that a cache hit claims one in "
              "milliseconds; false: no warm instances at all (explicit pools are refused).",
              env="SQLRS_WARM"),
    ConfigKey("warm.per_state", "integer", 1,
              "Warm instances kept per recently built or hit state; 0: none automatically (pools still work)."),
    ConfigKey("warm.max_states", "integer", 4, "How many of the most recently used states get warm instances."),
    ConfigKey("warm.max_instances", "integer", 8,
              "Upper bound of warm (started, not yet claimed) instances in all, pools included."),
    ConfigKey("warm.idle_seconds", "integer", 600,
              "Warm instances of a state (or a pool) nobody used or renewed for this many seconds are removed."),
)
BY_NAME = {key.name: key for key in KEYS}


def lookup(name: str) -> ConfigKey:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown config key {name!r}", hint="keys: " + ", ".join(sorted(BY_NAME))) from None


def schema() -> dict[str, Any]:
    """JSON Schema of the configuration object."""
    properties: dict[str, Any] = {}
    for key in KEYS:
        prop: dict[str, Any] = {"type": key.type, "default": key.default, "description": key.description}
        if key.choices:
            prop["enum"] = list(key.choices)
        if key.env:
            prop["x-env"] = key.env
        properties[key.name] = prop
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": properties, "additionalProperties": False}
