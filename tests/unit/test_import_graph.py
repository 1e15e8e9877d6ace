"""The house has no circles: sqlrs' modules, with every import as an arrow (function-level imports
included), form no cycle, and no module of the engine client or the CLI reaches into the adapters.
No room is too big either: a module over MAX_LINES lines holds more than one concept (issue 20).

Run as a script to print the graph's cycles: `python tests/unit/test_import_graph.py`."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sqlrs"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The sqlrs modules `name` imports (a `from package import module` counts as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
                elif base in known:
                    yield base


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {target for target in imports(name, path, known) if target != name}
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(result)


def test_no_module_imports_itself_around_a_circle() -> None:
    assert cycles(graph()) == []


def test_the_engine_client_and_the_cli_do_not_reach_into_the_adapters() -> None:
    reaching = sorted(f"{name} -> {target}" for name, targets in graph().items()
                      if name.startswith(("sqlrs.engine_client", "sqlrs.entrypoints.cli"))
                      for target in targets if target.startswith("sqlrs.adapters"))
    assert reaching == []


def test_no_module_is_over_the_line_limit() -> None:
    too_long = sorted(f"{path.relative_to(ROOT.parent)}: {lines} lines" for path in modules().values()
                      if (lines := len(path.read_text().splitlines())) > MAX_LINES)
    assert too_long == [], f"split these by concept (at most {MAX_LINES} lines each)"


if __name__ == "__main__":
    for component in cycles(graph()):
        print(" <-> ".join(component))
    edges = graph()
    for name in sorted(edges):
        if name.startswith(("sqlrs.engine_client", "sqlrs.entrypoints.cli")):
            for target in sorted(edges[name]):
                if target.startswith("sqlrs.adapters"):
                    print(f"upward: {name} -> {target}")
