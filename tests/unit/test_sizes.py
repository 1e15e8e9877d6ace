"""One size parser and one size formatter for the whole of sqlrs (docs/cli.md, "Sizes")."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sqlrs.adapters.snapshots.loopvolume import parse_volume_size
from sqlrs.domain.config import lookup
from sqlrs.domain.errors import UsageError
from sqlrs.domain.sizes import format_size, parse_size

GiB = 1 << 30


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096), ("4096B", 4096), ("0", 0), (" 7 ", 7),
    ("10K", 10 << 10), ("10k", 10 << 10), ("10Ki", 10 << 10), ("10KiB", 10 << 10),
    ("10M", 10 << 20), ("10MiB", 10 << 20), ("10G", 10 * GiB), ("10g", 10 * GiB), ("10GiB", 10 * GiB),
    ("10gib", 10 * GiB), ("2T", 2 << 40), ("2TiB", 2 << 40), ("1.5G", int(1.5 * GiB)),
    ("10KB", 10_000), ("10MB", 10_000_000), ("10GB", 10_000_000_000), ("10gb", 10_000_000_000),
    ("2TB", 2 * 10**12), ("-1G", -GiB), (123, 123),
])
def test_parse_size_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "ten", "10X", "10GBB", "10iB", "1e3", "10 G B", "--1"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", ["10GB", "10G", "512MiB", "100MB", "1.5T", "4096"])
def test_config_and_store_size_agree(text: str) -> None:
    """`config set` and `init local --store-size` read the same text as the same byte count
    (they disagreed on "10GB": 10 GiB in one, 10**10 bytes in the other)."""
    assert lookup("cache.capacity.max_bytes").parse(text) == parse_volume_size(text) == parse_size(text)


def test_config_and_store_size_errors() -> None:
    with pytest.raises(UsageError, match="integer"):
        lookup("cache.capacity.max_bytes").parse("ten")
    with pytest.raises(UsageError, match="negative"):
        lookup("cache.capacity.max_bytes").parse("-1G")
    with pytest.raises(UsageError, match="larger than zero"):
        parse_volume_size("0")
    with pytest.raises(UsageError, match="invalid size"):
        parse_volume_size("10X")


@pytest.mark.parametrize(("size", "text"), [
    (0, "0 B"), (None, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (10 * GiB, "10.0 GiB"),
    (3 << 40, "3.0 TiB"), (5 << 50, "5120.0 TiB"), (-2048, "-2.0 KiB"),
])
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text


def test_one_definition_everywhere() -> None:
    """The CLI table, the cache messages and the volume messages use the one formatter."""
    from sqlrs.adapters.snapshots import loopvolume
    from sqlrs.domain import config
    from sqlrs.entrypoints.cli import main
    from sqlrs.services.states import cache

    assert config.parse_size is parse_size and loopvolume.parse_size is parse_size
    assert main.human_bytes is format_size and cache.format_size is format_size
    assert loopvolume.format_size is format_size


def test_sizes_module_is_stdlib_only() -> None:
    """`sqlrs init local` parses --store-size without importing attrs (the CLI stays light)."""
    code = ("import sys; import sqlrs.domain.sizes, sqlrs.entrypoints.cli.init_cmd; "
            "heavy = {'attrs', 'cattrs', 'sqlalchemy', 'psycopg'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
