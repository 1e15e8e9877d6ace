"""Python inputs keyed by what the interpreter runs: their syntax tree.

An Alembic revision, its `env.py` (and, for other host kinds, a Django migration) is a Python
module the user's own tool imports and runs. Comments, blank lines, line breaks, indentation
width, quote style and line numbers change nothing it does, so they do not enter its key;
docstrings and code do (a docstring is a value a program can read, and Alembic reads them).

The key is a sha256 over a canonical walk of `ast.parse`'s tree: every node's type and its
fields in order, constants by type and value; source positions (`lineno`, ...) are node
attributes, not fields, so they never count. A field that is absent, None or an empty list is
left out, so the key does not change with Python versions that add optional fields (`type_params`
of 3.12, the defaults of 3.13). A source that does not parse (or nests too deep for the parser) is
keyed by its bytes: the tool will report the error when it runs it.

`PYTHON_KEY_VERSION` enters every key: bump it whenever the canonical walk changes, so states
keyed the old way are not mistaken for the new ones.
"""

from __future__ import annotations

import ast
import hashlib

# 1: the first syntax-tree key (before it, revisions and env.py were keyed by their bytes' sha256)
PYTHON_KEY_VERSION = 1

__all__ = ["PYTHON_KEY_VERSION", "python_source_key"]


def python_source_key(source: bytes | str) -> str:
    """64 hex characters that change when the module's code or docstrings change, and not when
    only its comments or formatting do."""
    hasher = hashlib.sha256()
    _token(hasher, b"V", str(PYTHON_KEY_VERSION).encode())
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # a NUL byte; nested beyond the parser
        raw = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
        _token(hasher, b"R", raw)
        return hasher.hexdigest()
    _walk(hasher, tree)
    return hasher.hexdigest()


def _token(hasher: hashlib._Hash, tag: bytes, raw: bytes) -> None:
    # tagged and length-prefixed: no two different walks feed the same bytes
    hasher.update(tag + len(raw).to_bytes(8, "big") + raw)


def _walk(hasher: hashlib._Hash, tree: ast.AST) -> None:
    # iterative: a module of thousands of chained operators nests deeper than Python's recursion limit
    stack: list[object] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Constant):
            value = item.value
            _token(hasher, b"C", f"{type(value).__name__}:{value!r}".encode("utf-8", "surrogatepass"))
        elif isinstance(item, ast.AST):
            present = [(name, value) for name, value in ast.iter_fields(item) if value is not None and value != []]
            _token(hasher, b"N", f"{type(item).__name__}/{len(present)}".encode())
            for name, value in reversed(present):
                stack.append(value)
                stack.append(_Field(name))
        elif isinstance(item, _Field):
            _token(hasher, b"F", item.name.encode())
        elif isinstance(item, list):
            _token(hasher, b"L", str(len(item)).encode())
            stack.extend(reversed(item))
        else:  # a bare value in a field: an identifier, an operator flag, None inside a list
            _token(hasher, b"S", f"{type(item).__name__}:{item!r}".encode("utf-8", "surrogatepass"))


class _Field:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name
