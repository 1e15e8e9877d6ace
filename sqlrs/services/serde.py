"""cattrs converters: domain objects to and from JSON-ready dicts (the domain itself knows no cattrs)."""

from __future__ import annotations

from datetime import datetime

import cattrs


def _make_json_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat(timespec="milliseconds"))
    converter.register_structure_hook(datetime, lambda value, _: datetime.fromisoformat(value))
    return converter


json_converter = _make_json_converter()
