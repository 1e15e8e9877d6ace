"""Durations as people write them on the command line: `90` (seconds), `90s`, `15m`, `2h`, `1d`,
decimals (`1.5h`), milliseconds (`500ms`) and Go's compound form (`1h30m`, which the upstream
sqlrs' `--timeout 15m` takes). Standard library only: the CLI's hot path parses `--ttl` with it.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError when it is not a duration."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _PART_RE.findall(value)
    if not value or not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)
