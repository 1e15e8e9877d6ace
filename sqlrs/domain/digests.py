"""The one digest every identity is made of: sha256 over an unambiguous encoding of a list of
fields. Every field is type-tagged and length-prefixed, so no two different field lists hash alike
("ab" + "c" != "a" + "bc"). Steps (their content digests) and keys (state ids) both use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Union

Field = Union[str, bytes, int, bool, None, Sequence["Field"]]  # noqa: UP007 - recursive alias


def _encode(value: Field, out: list[bytes]) -> None:
    if value is None:
        out.append(b"N")
    elif isinstance(value, bool):
        out.append(b"T" if value else b"F")
    elif isinstance(value, int):
        raw = str(value).encode()
        out.append(b"I" + len(raw).to_bytes(8, "big") + raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        out.append(b"S" + len(raw).to_bytes(8, "big") + raw)
    elif isinstance(value, bytes):
        out.append(b"B" + len(value).to_bytes(8, "big") + value)
    else:
        items = list(value)
        out.append(b"L" + len(items).to_bytes(8, "big"))
        for item in items:
            _encode(item, out)


def digest(*fields: Field) -> str:
    """sha256 over an unambiguous encoding of `fields`, as 64 hex characters."""
    out: list[bytes] = []
    _encode(list(fields), out)
    hasher = hashlib.sha256()
    for chunk in out:
        hasher.update(chunk)
    return hasher.hexdigest()
