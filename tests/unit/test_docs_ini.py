"""The `pytest.ini` examples in docs/python-api.md work when pasted: every sqlrs_* value parses
the way the plugin reads it (pytest's ini parser, iniconfig, keeps a trailing `# comment` as part
of the value, so `sqlrs_pool_size = 8  # ...` broke with `invalid literal for int()`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import iniconfig
import pytest

from sqlrs.entrypoints.pytest import plugin as pytest_plugin

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
INT_KEYS = {"sqlrs_pool_size", "sqlrs_ttl"}  # read with int() by the plugin
BOOLS = {"1", "0", "true", "false", "yes", "no", "y", "n", "t", "f", "on", "off"}


class RecordingParser:
    """Collects what the plugin registers with pytest_addoption (ini names and types)."""

    def __init__(self) -> None:
        self.ini: dict[str, str | None] = {}

    def getgroup(self, *args: Any, **kwargs: Any) -> RecordingParser:
        return self

    def addoption(self, *args: Any, **kwargs: Any) -> None:
        pass

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:
        self.ini[name] = type


def ini_snippets() -> list[str]:
    return re.findall(r"```ini\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_ini_snippets() -> None:
    assert any("sqlrs_" in snippet for snippet in ini_snippets())


@pytest.mark.parametrize("snippet", ini_snippets())
def test_doc_ini_values_are_valid(snippet: str) -> None:
    parser = RecordingParser()
    pytest_plugin.pytest_addoption(parser)  # type: ignore[arg-type]
    ini = iniconfig.IniConfig("pytest.ini", data=snippet)
    section = ini["pytest"]
    keys = [key for key in section if key.startswith("sqlrs_")]
    assert keys
    for key in keys:
        assert key in parser.ini, f"{key} is not an ini option of the plugin"
        value = section[key]
        kind = parser.ini[key]
        assert "#" not in value, f"{key}: pytest keeps the inline comment in the value: {value!r}"
        if key in INT_KEYS:
            assert int(value) >= 0, key
        elif kind == "bool":
            assert value.strip().lower() in BOOLS, f"{key}: {value!r} is not a boolean"
        elif kind == "linelist":
            lines = [line.strip() for line in value.splitlines() if line.strip()]
            assert lines, f"{key}: empty"
        elif key == "sqlrs_runtime":
            assert value in ("auto", "docker", "podman", "native")
