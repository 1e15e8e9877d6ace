"""The library and the engine client do not import the CLI or the engine (issue 12: "library -> CLI").

The library (sqlrs.entrypoints.library), the pytest plugin (sqlrs.entrypoints.pytest), Django's
test runner (sqlrs.entrypoints.django) and sqlrs.engine_client sit under the CLI, not on it: both
the CLI and the library are façades over sqlrs.engine_client. Checked two ways: every `import`
statement reachable from them (function-local ones too, followed through every sqlrs module they
reach), and the modules a real import leaves in sys.modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sqlrs

PACKAGE = Path(sqlrs.__file__).parent
ROOMS = ("entrypoints/library", "entrypoints/pytest", "entrypoints/django", "engine_client", "django")
LIBRARY = sorted({"sqlrs", "sqlrs.pytest_plugin", *(
    ".".join(("sqlrs", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for room in ROOMS for p in (PACKAGE / room).glob("*.py"))})
FORBIDDEN = ("sqlrs.entrypoints.cli", "sqlrs.entrypoints.engine")


def module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    relative = PACKAGE.joinpath(*parts)
    for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
    """Every sqlrs module `name` names in an import statement, anywhere in the file."""
    path = module_file(name)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from sqlrs.pkg import module` imports a module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if module_file(f"{node.module}.{alias.name}") is not None)
    return {m for m in found if m == "sqlrs" or m.startswith("sqlrs.")}


def reachable(start: str) -> dict[str, str]:
    """Every sqlrs module reachable from `start` through import statements -> who imports it."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in imports_of(current):
            parts = imported.split(".")
            # importing a.b.c runs a and a.b as well
            for depth in range(1, len(parts) + 1):
                module = ".".join(parts[:depth])
                if module not in seen and module_file(module) is not None:
                    seen[module] = current
                    todo.append(module)
    return seen


@pytest.mark.parametrize("module", LIBRARY)
def test_no_import_of_the_cli(module: str) -> None:
    found = reachable(module)
    offenders = {m: by for m, by in found.items() if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN))}
    assert not offenders, f"{module} reaches the CLI: " + ", ".join(f"{by} imports {m}" for m, by in offenders.items())


def test_the_check_can_fail() -> None:
    """The CLI itself does reach sqlrs.entrypoints: the scan sees imports."""
    assert "sqlrs.entrypoints.cli.output" in reachable("sqlrs.entrypoints.cli.main")
    assert "sqlrs.engine_client.jobs" in reachable("sqlrs.entrypoints.library.client")
    assert "sqlrs.entrypoints.library.client" in LIBRARY and "sqlrs.entrypoints.pytest.plugin" in LIBRARY


def test_importing_the_library_loads_no_cli_module() -> None:
    code = ("import sys, importlib\n"
            f"for name in {LIBRARY!r}: importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
