"""The modules the CLI's hot commands run (fast.py and the command bodies it shares with the Click
commands, sqlrs.engine_client) import nothing heavy (docs/decisions/0003-cli-fast-path.md).

tests/integration/test_cli_fast_e2e.py checks the same on real commands against an engine; this
checks the modules themselves, without one."""

from __future__ import annotations

import subprocess
import sys

HOT = ["sqlrs.entrypoints.cli.fast", "sqlrs.entrypoints.cli.output", "sqlrs.entrypoints.cli.listing",
       "sqlrs.entrypoints.cli.running", "sqlrs.entrypoints.cli.preparing", "sqlrs.entrypoints.cli.watching",
       "sqlrs.engine_client.connection", "sqlrs.engine_client.jobs", "sqlrs.engine_client.runs",
       "sqlrs.engine_client.psqlargs", "sqlrs.engine_client.errors", "sqlrs.engine_client.wire",
       "sqlrs.extensions"]  # `prepare:psql --runtime NAME` reads the registered names through it
HEAVY = ["click", "attrs", "cattrs", "sqlalchemy", "starlette", "docker", "podman", "psycopg", "rich",
         # and what 0003 keeps off the hot path: typing, pathlib (read files only), spawning, socket.py
         "typing", "pathlib", "subprocess", "threading", "socket", "urllib", "selectors", "datetime", "uuid",
         "platform", "inspect"]


def loaded_after_importing(modules: list[str]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_hot_modules_import_nothing_heavy() -> None:
    loaded = loaded_after_importing(HOT)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_the_check_can_fail() -> None:
    loaded = loaded_after_importing(["sqlrs.entrypoints.cli.main"])
    assert "click" in loaded
