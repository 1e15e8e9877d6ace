"""Configuration stored as JSON in the state directory, with environment overrides."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlrs import extensions
from sqlrs.domain.config import BY_NAME, KEYS, Names, lookup


class ConfigFile:
    def __init__(self, path: Path, environ: Mapping[str, str] | None = None, names: Names = extensions.names):
        """`names`: the runtimes and snapshot stores the choices of container.runtime and
        snapshot.backend come from (the registered ones)."""
        self._path = path
        self._environ = os.environ if environ is None else environ
        self._names = names
        self._lock = threading.Lock()

    def stored(self) -> dict[str, Any]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if k in BY_NAME} if isinstance(data, dict) else {}

    def get(self, name: str) -> Any:
        key = lookup(name)
        if key.env and self._environ.get(key.env):
            return key.parse(self._environ[key.env], self._names)
        return self.stored().get(name, key.default)

    def effective(self) -> dict[str, dict[str, Any]]:
        """Every key with its value and where the value comes from."""
        stored = self.stored()
        result: dict[str, dict[str, Any]] = {}
        for key in KEYS:
            if key.env and self._environ.get(key.env):
                result[key.name] = {"value": key.parse(self._environ[key.env], self._names),
                                    "source": f"env {key.env}"}
            elif key.name in stored:
                result[key.name] = {"value": stored[key.name], "source": "config"}
            else:
                result[key.name] = {"value": key.default, "source": "default"}
        return result

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set keys (value None unsets); validated before anything is written."""
        parsed = {name: (None if value is None else lookup(name).parse(value, self._names))
                  for name, value in changes.items()}
        with self._lock:
            data = self.stored()
            for name, value in parsed.items():
                if value is None:
                    data.pop(name, None)
                else:
                    data[name] = value
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".config.")
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
            os.replace(tmp, self._path)
