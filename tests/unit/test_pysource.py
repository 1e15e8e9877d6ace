"""Python inputs are keyed by their syntax tree: comments and layout do not count, code and docstrings do."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs.domain import pysource
from sqlrs.domain.pysource import python_source_key
from sqlrs.engine_client.hostinputs import alembic_steps

REVISION = '''"""add a column

Revision ID: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("products", sa.Column("sku", sa.String(32), nullable=True))
    op.execute("UPDATE products SET sku = 'SKU-' || lpad(id::text, 4, '0')")
'''

# the same module as a formatter and a commenting colleague would leave it
REFORMATTED = '''# -*- coding: utf-8 -*-
"""add a column

Revision ID: 0002
"""
from alembic import op   # the operations
import sqlalchemy as sa


revision = '0002'   # ours
down_revision = '0001'

def upgrade() -> None:
    # first the column, then the backfill
    op.add_column(
        "products",
        sa.Column("sku", sa.String(32), nullable=True),
    )

    op.execute(
        "UPDATE products SET sku = 'SKU-' || lpad(id::text, 4, '0')"
    )
'''


def test_comments_and_formatting_do_not_change_the_key() -> None:
    assert python_source_key(REVISION) == python_source_key(REFORMATTED)
    assert python_source_key(REVISION) == python_source_key(REVISION.encode())  # bytes or text
    assert python_source_key(REVISION + "\n\n# trailing\n") == python_source_key(REVISION)


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("add a column", "add the sku column"),  # the docstring
    lambda s: s.replace("String(32)", "String(33)"),  # a literal
    lambda s: s.replace("nullable=True", "nullable=False"),  # True vs False
    lambda s: s.replace("nullable=True", "nullable=1"),  # True vs 1: same value, other constant
    lambda s: s.replace("'SKU-'", "'sku-'"),  # the SQL in a string
    lambda s: s.replace('"products"', '"products "'),  # whitespace inside a string is data
    lambda s: s.replace("    op.execute", "    pass\n    op.execute"),  # a statement
    lambda s: s.replace("upgrade() -> None", "upgrade()"),  # an annotation
    lambda s: s.replace('down_revision = "0001"', 'down_revision = "0001"\nbranch_labels = None'),
])
def test_code_and_docstrings_change_the_key(edit: object) -> None:
    assert callable(edit)
    edited = edit(REVISION)
    assert edited != REVISION
    assert python_source_key(edited) != python_source_key(REVISION)


def test_the_key_is_versioned_and_a_file_that_does_not_parse_keys_by_its_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = python_source_key(REVISION)
    broken = "def upgrade(:\n    pass\n"
    assert python_source_key(broken) != python_source_key(broken + "# a comment\n")  # bytes, then
    assert python_source_key("x = 1\0") != python_source_key("x = 2\0")
    monkeypatch.setattr(pysource, "PYTHON_KEY_VERSION", pysource.PYTHON_KEY_VERSION + 1)
    assert python_source_key(REVISION) != before  # a new canonical form gets new keys


def test_positions_do_not_count_but_structure_does() -> None:
    assert python_source_key("a = [1, 2]\n") == python_source_key("a = [\n    1,\n    2,\n]\n")
    assert python_source_key("f(a)(b)\n") != python_source_key("f(a, b)\n")
    assert python_source_key("x = {None: 1}\n") != python_source_key("x = {**None}\n")
    assert python_source_key("a = b = 1\n") != python_source_key("a = 1\nb = 1\n")


@pytest.mark.parametrize("terms", [900, 20000])  # walked without recursion; too deep for the parser itself
def test_deeply_nested_sources_are_keyed(terms: int) -> None:
    chained = "x = " + " + ".join(["1"] * terms) + "\n"
    assert python_source_key(chained) != python_source_key(chained.replace("1 + 1\n", "1 + 2\n"))


def test_alembic_steps_ignore_comments_in_revisions_and_env_py(tmp_path: Path) -> None:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    env_py = tmp_path / "migrations" / "env.py"
    env_py.write_text("from alembic import context\n\ncontext.configure()\n")
    revision = tmp_path / "migrations" / "versions" / "0002_sku.py"
    (tmp_path / "migrations" / "versions" / "0001_base.py").write_text(
        'revision = "0001"\ndown_revision = None\n\ndef upgrade():\n    pass\n')
    revision.write_text(REVISION)

    def digests() -> list[str]:
        return [step["digest"] for step in alembic_steps("alembic.ini", None, tmp_path)]

    before = digests()
    env_py.write_text("# configured by the team\nfrom alembic import context\n\n\ncontext.configure()  # online\n")
    revision.write_text(REFORMATTED)
    assert digests() == before
    env_py.write_text("from alembic import context\n\ncontext.configure(compare_type=True)\n")
    after = digests()
    assert all(a != b for a, b in zip(after, before, strict=True))  # env.py runs for every revision
    revision.write_text(REVISION.replace("String(32)", "String(64)"))
    assert digests()[0] == after[0] and digests()[1] != after[1]
