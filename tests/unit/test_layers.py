"""The dependency rule of the hexagonal layout (docs/architecture.md), checked on the source.

Every module under sqlrs/ is parsed with `ast`; its imports are collected wherever they are
(module level, inside functions, under TYPE_CHECKING). A rule is one function from (module,
imported module) to a complaint or None; add a rule by adding a function to RULES.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sqlrs

PACKAGE = Path(sqlrs.__file__).parent
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base)
                yield f"{prefix}.{node.module}" if node.module else prefix
            else:
                assert node.module is not None
                yield node.module
                # `from sqlrs.adapters import pgfiles` imports the module sqlrs.adapters.pgfiles
                yield from (f"{node.module}.{alias.name}" for alias in node.names if node.module.startswith("sqlrs"))


@functools.cache
def all_imports() -> list[tuple[str, str]]:
    return [(module_name(path), imported) for path in sorted(PACKAGE.rglob("*.py")) for imported in imports(path)]


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


Rule = Callable[[str, str], str | None]


# Known exceptions, each with its reason: (module, imported top-level package). None today: the
# Liquibase changelog parser (PyYAML) lives in sqlrs.changelogs, outside the domain.
DOMAIN_EXCEPTIONS: set[tuple[str, str]] = set()


def domain_is_pure(module: str, imported: str) -> str | None:
    """The domain depends on the standard library and attrs only."""
    if not within(module, "sqlrs.domain"):
        return None
    top = imported.split(".")[0]
    if top in STDLIB or top == "attrs" or within(imported, "sqlrs.domain") or (module, top) in DOMAIN_EXCEPTIONS:
        return None
    return "the domain may import only the standard library, attrs and itself"


def services_depend_on_ports(module: str, imported: str) -> str | None:
    """Services reach the outside world through ports only."""
    if within(module, "sqlrs.services") and (within(imported, "sqlrs.adapters")
                                            or within(imported, "sqlrs.entrypoints")):
        return "services depend on ports, not on adapters or entrypoints"
    return None


def ports_depend_on_the_domain(module: str, imported: str) -> str | None:
    """Ports are interfaces over the domain."""
    if within(module, "sqlrs.ports") and any(within(imported, layer) for layer in (
            "sqlrs.adapters", "sqlrs.entrypoints", "sqlrs.services")):
        return "ports may not import adapters, services or entrypoints"
    return None


def contract_suites_test_ports(module: str, imported: str) -> str | None:
    """sqlrs.testing runs on any package's adapter: it knows the ports, not sqlrs' adapters."""
    if within(module, "sqlrs.testing") and any(within(imported, layer) for layer in (
            "sqlrs.adapters", "sqlrs.entrypoints", "sqlrs.services", "sqlrs.engine_client")):
        return "the contract suites may import only ports, the domain and themselves"
    return None


def extension_discovery_is_stdlib(module: str, imported: str) -> str | None:
    """sqlrs.extensions is read on the CLI's fast path: the standard library only."""
    if module == "sqlrs.extensions" and imported.split(".")[0] not in STDLIB:
        return "sqlrs.extensions may import only the standard library"
    return None


def clients_reach_the_engine_through_its_api(module: str, imported: str) -> str | None:
    """The engine client, the CLI, the library and the pytest plugin talk to the engine over HTTP:
    none of them uses an adapter (what both sides need is neutral: sqlrs.procfs, sqlrs.config_file,
    sqlrs.changelogs; what only the engine may do runs in sqlrs.entrypoints.engine)."""
    clients = ("sqlrs.engine_client", "sqlrs.entrypoints.cli", "sqlrs.entrypoints.library", "sqlrs.entrypoints.pytest",
               "sqlrs.entrypoints.django", "sqlrs.django")
    if any(within(module, client) for client in clients) and any(within(imported, layer) for layer in (
            "sqlrs.adapters", "sqlrs.services")):
        return "clients of the engine may not import adapters or services"
    return None


def neutral_modules_are_stdlib(module: str, imported: str) -> str | None:
    """What both the client side and the engine import is light: the standard library, the
    domain and the entry point names (sqlrs.extensions)."""
    if module in ("sqlrs.procfs", "sqlrs.config_file", "sqlrs.version",
                  "sqlrs.changelogs.liquibase_install") and not (
            imported.split(".")[0] in STDLIB or within(imported, "sqlrs.domain") or imported == "sqlrs.extensions"
            or imported == "sqlrs"):
        return "neutral modules may import only the standard library, the domain and sqlrs.extensions"
    return None


RULES: list[Rule] = [domain_is_pure, services_depend_on_ports, ports_depend_on_the_domain, contract_suites_test_ports,
                     extension_discovery_is_stdlib, clients_reach_the_engine_through_its_api,
                     neutral_modules_are_stdlib]


def test_the_walk_sees_function_level_imports() -> None:
    """Guard of the checker itself: bootstrap imports adapters inside functions."""
    found = {imported for module, imported in all_imports() if module == "sqlrs.entrypoints.engine.bootstrap"}
    assert "sqlrs.adapters.psycopg_admin" in found and "sqlrs.adapters.oci.layers" in found


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_layer_rule(rule: Rule) -> None:
    broken = sorted({f"{module} imports {imported}: {complaint}" for module, imported in all_imports()
                     if (complaint := rule(module, imported)) is not None})
    assert broken == []
