"""Byte sizes as people write them, and as sqlrs prints them. Standard library only: the CLI's
`init local` parses `--store-size` with this without importing attrs or the engine.

Units (case-insensitive; documented in docs/cli.md, "Sizes"):

- a plain number is bytes (`4096`, also `4096B`);
- `K M G T P`, `Ki Mi Gi Ti Pi` and `KiB MiB GiB TiB PiB` are powers of 1024 (GNU `truncate`,
  `df -h`, PostgreSQL's `10GB` aside, what people usually mean by `10G`);
- `KB MB GB TB PB` are powers of 1000 (SI, as disks are sold).

A decimal number is allowed (`1.5G`); the result is truncated to whole bytes.
"""

from __future__ import annotations

import re

_POWERS = "KMGTP"
DEFAULT_VOLUME_SIZE = "10G"  # `init local`'s loopback volume when --store-size is not given
_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:([KMGTP])(I?)(B?)|(B?))\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from `10G`, `512MiB`, `100MB`, `1.5T` or a plain byte count; ValueError otherwise.

    Negative values parse (callers that take sizes say what they accept): `-1G` is -2**30.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}")
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}")
    number, unit, binary, suffix = match.group(1), match.group(2), match.group(3), match.group(4)
    if unit is None:
        factor = 1
    else:
        power = _POWERS.index(unit.upper()) + 1
        # "10G", "10Gi", "10GiB" are binary; only "10GB" (a B without the i) is decimal
        factor = 1000 ** power if suffix and not binary else 1024 ** power
    if "." in number:
        return int(float(number) * factor)
    return int(number) * factor


def format_size(size: int | float | None) -> str:
    """`1536` -> `1.5 KiB`: powers of 1024, one decimal; whole bytes below 1 KiB."""
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover - the loop returns at TiB
