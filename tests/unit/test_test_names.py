"""Every test module's file name is unique across tests/: the suite has no packages (rootdir-relative
imports), so a second module of the same name cannot be imported and its tests never run (the
collection error that failed CI once)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert len(names) > 50  # the whole suite was looked at
    assert [name for name, count in names.items() if count > 1] == []
