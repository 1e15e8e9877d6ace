from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs import extensions
from sqlrs.domain.config import lookup, schema
from sqlrs.domain.errors import UsageError
from sqlrs.domain.passwords import scram_verifier
from sqlrs.domain.sizes import parse_size
from sqlrs.domain.steps import Include, ScriptFile, Step
from sqlrs.services.instances.scripts import first_error, materialize


def test_first_error_with_location_and_context() -> None:
    output = ("SET\nCREATE TABLE\npsql:/x/f0.sql:25: ERROR:  relation \"nope\" does not exist\n"
              "LINE 1: select * from nope;\n                      ^\n")
    error = first_error(output)
    assert error is not None and error.file == "/x/f0.sql" and error.line == 25
    assert error.message.startswith('ERROR:  relation "nope"') and "LINE 1" in error.message
    plain = first_error("ERROR:  division by zero\n")
    assert plain is not None and plain.file is None
    assert first_error("all good\n") is None


def test_materialize_keeps_lines_and_maps_paths_back(tmp_path: Path) -> None:
    step = Step("file", "main.sql", (
        ScriptFile("main.sql", "select 1;\n\\ir lib/x.sql\nselect 3;\n", (Include(1, 1),)),
        ScriptFile("lib/x.sql", "select 2;\n"),
    ))
    result = materialize(step, tmp_path / "s", lambda p: f"/visible{p}")
    text = (tmp_path / "s" / "f0.sql").read_text().splitlines()
    assert text[1] == f"\\i '/visible{tmp_path}/s/f1.sql'" and text[2] == "select 3;"
    assert result.humanize(f"psql:/visible{tmp_path}/s/f1.sql:1: ERROR") == "psql:lib/x.sql:1: ERROR"


def test_sizes_and_config_parsing() -> None:
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1024") == 1024
    with pytest.raises(ValueError):
        parse_size("ten")
    assert lookup("cache.capacity.max_bytes").parse("2G") == 2 * 1024**3
    assert lookup("cache.capacity.max_bytes").parse("AUTO") == "auto" == lookup("cache.capacity.max_bytes").default
    with pytest.raises(UsageError, match="or auto"):
        lookup("cache.capacity.max_bytes").parse("lots")
    with pytest.raises(UsageError):
        lookup("warm.idle_states").parse("auto")  # a keyword only where the key takes one
    assert schema(extensions.names)["properties"]["cache.capacity.max_bytes"]["anyOf"][1] == {"enum": ["auto"]}
    with pytest.raises(UsageError):
        lookup("container.runtime").parse("lxc", extensions.names)
    assert lookup("container.runtime").parse("native", extensions.names) == "native"  # registered by sqlrs
    assert lookup("snapshot.backend").parse("reflink", extensions.names) == "reflink"
    with pytest.raises(UsageError):
        lookup("no.such.key")


def test_scram_verifier_matches_postgres_format() -> None:
    # reference produced by PostgreSQL 15 for password "secret" with this salt
    verifier = scram_verifier("secret", salt=b"0123456789abcdef", iterations=4096)
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert len(verifier.split("$")[2].split(":")) == 2
