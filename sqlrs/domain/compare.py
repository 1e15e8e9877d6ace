"""Comparing two databases: what their schemas hold and what their tables contain.

A database's schema is read as a `Schema` of `DbObject`s (sqlrs/ports/inspector.py reads them):
relations, columns, constraints, indexes, triggers, functions, views, sequences, extensions,
types, policies, rules, schemas — each with a label that names it the way a reader would
(`column public.users.email`, `constraint users_pkey on public.users`) and a body that says what
it is (`character varying(200) NOT NULL`, `PRIMARY KEY (id)`). Two schemas differ by the objects
only one holds (added in B, removed from A) and by those both hold with another body or
definition (changed). Columns and owned sequences of a relation that is added or removed as a
whole are folded into its entry: `table public.users (id integer NOT NULL, email text)`.

Columns are matched by name, not position: a downgrade that re-adds a dropped column puts it last,
and no statement but `SELECT *` can tell (decisions/0012).

Table contents are compared by row count and an ordered digest of the rows, computed in the
server over the columns both sides have (by name, in name order), so a column added with a
default does not make every row "changed": the schema part says a column was added. A table that
only one side has counts as empty on the other.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

# the order objects are listed in (then by name): containers before what they contain
KIND_ORDER = ("schema", "extension", "type", "domain", "table", "partitioned table", "foreign table", "view",
              "materialized view", "sequence", "column", "constraint", "index", "unique index", "trigger", "rule",
              "policy", "function", "procedure", "aggregate")
# kinds whose objects are part of their relation's own entry when that relation comes or goes
FOLDED = frozenset({"column", "sequence"})


class DataMode(enum.StrEnum):
    """How much of the data a comparison looks at."""

    CONTENT = "content"  # row counts, ordered digests of the rows, sequence positions
    ROWS = "rows"  # row counts only
    NONE = "none"  # the schema only


@attrs.frozen
class DbObject:
    """One object of a database's schema.

    `kind` and `name` identify it (`label` is how messages name it); `body` is what a reader
    writes after the name; `definition`, when given, is what decides whether it changed (a
    function's or view's full text, too long to show) instead of the body. `parent` is the label
    of the relation it belongs to (columns, constraints, indexes, triggers, owned sequences).
    """

    kind: str
    name: str
    body: str = ""
    definition: str | None = None
    parent: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def key(self) -> str:
        return self.label

    def describe(self, folded: Sequence[DbObject] = ()) -> str:
        """The object as a reader would write it; `folded`: its columns, written inside it."""
        text = self.label
        columns = [f"{column.name.rsplit('.', 1)[-1]} {column.body}".rstrip()
                   for column in folded if column.kind == "column"]
        if columns:
            text += f" ({', '.join(columns)})"
        return f"{text} {self.body}" if self.body else text

    def compared(self) -> str:
        return self.body if self.definition is None else f"{self.body}\n{self.definition}"


@attrs.frozen
class Schema:
    """The schema of one database: its objects, and the columns of its tables (for the data)."""

    objects: tuple[DbObject, ...]
    # relation name -> its column names, for the relations whose rows count as data
    tables: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def without(self, ignored: Iterable[str]) -> Schema:
        """This schema with the named relations (qualified, or bare names in any schema) left out,
        with everything that belongs to them."""
        names = set(ignored)
        if not names:
            return self

        def dropped(name: str) -> bool:
            return name in names or name.split(".", 1)[-1] in names

        relations = {obj.label for obj in self.objects if obj.parent is None and dropped(obj.name)}
        objects = tuple(obj for obj in self.objects if obj.label not in relations and obj.parent not in relations)
        tables = {name: columns for name, columns in self.tables.items() if not dropped(name)}
        return Schema(objects, tables)


@attrs.frozen
class TableContent:
    """What a table holds: its row count and a digest of its rows (None: not computed)."""

    rows: int
    digest: str | None = None


@attrs.frozen
class SchemaDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}


@attrs.frozen
class TableDiff:
    name: str
    rows_a: int | None  # None: the table is not in A
    rows_b: int | None
    data_changed: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows_a": self.rows_a, "rows_b": self.rows_b, "data_changed": self.data_changed}


@attrs.frozen
class SequenceDiff:
    name: str
    value_a: int | None  # None: never used (or not there)
    value_b: int | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value_a": self.value_a, "value_b": self.value_b}


@attrs.frozen
class Comparison:
    schema: SchemaDiff
    tables: tuple[TableDiff, ...]
    sequences: tuple[SequenceDiff, ...] = ()  # only those whose position differs
    data: DataMode = DataMode.CONTENT

    @property
    def equal(self) -> bool:
        return self.schema.empty and not self.sequences and not any(t.data_changed for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {"equal": self.equal, "schema": self.schema.to_json(), "tables": [t.to_json() for t in self.tables],
                "sequences": [s.to_json() for s in self.sequences], "data": self.data.value}


def _order(obj: DbObject) -> tuple[int, str]:
    kind = KIND_ORDER.index(obj.kind) if obj.kind in KIND_ORDER else len(KIND_ORDER)
    return kind, obj.name


def _listed(objects: list[DbObject]) -> tuple[str, ...]:
    """Descriptions of objects that come or go together: children folded into their relation."""
    labels = {obj.label for obj in objects}
    children: dict[str, list[DbObject]] = {}
    for obj in objects:
        if obj.parent in labels and obj.kind in FOLDED:
            children.setdefault(obj.parent, []).append(obj)
    folded = {child.label for group in children.values() for child in group}
    return tuple(obj.describe(children.get(obj.label, ())) for obj in sorted(objects, key=_order)
                 if obj.label not in folded)


def _change(a: DbObject, b: DbObject) -> str:
    if a.body != b.body:
        return f"{a.label}: {a.body or '(nothing)'} → {b.body or '(nothing)'}"
    return f"{a.label}: definition changed"


def diff_schema(a: Schema, b: Schema) -> SchemaDiff:
    """What B has that A has not (added), what A has that B has not (removed), what both have
    but differently (changed)."""
    in_a = {obj.key: obj for obj in a.objects}
    in_b = {obj.key: obj for obj in b.objects}
    added = [obj for key, obj in in_b.items() if key not in in_a]
    removed = [obj for key, obj in in_a.items() if key not in in_b]
    changed = sorted(((in_a[key], obj) for key, obj in in_b.items()
                      if key in in_a and in_a[key].compared() != obj.compared()), key=lambda pair: _order(pair[0]))
    return SchemaDiff(added=_listed(added), removed=_listed(removed),
                      changed=tuple(_change(old, new) for old, new in changed))


def common_columns(a: Schema, b: Schema) -> dict[str, tuple[str, ...]]:
    """Per table either side has: the columns whose values are compared (those both sides have,
    in name order; all of a table's columns when only one side has it)."""
    result: dict[str, tuple[str, ...]] = {}
    for name in sorted(set(a.tables) | set(b.tables)):
        if name in a.tables and name in b.tables:
            result[name] = tuple(sorted(set(a.tables[name]) & set(b.tables[name])))
        else:
            result[name] = tuple(sorted(a.tables.get(name) or b.tables.get(name) or ()))
    return result


def diff_tables(a: Mapping[str, TableContent], b: Mapping[str, TableContent], mode: DataMode) -> tuple[TableDiff, ...]:
    """Per table either side has: its row counts and whether its rows differ. A table only one
    side has holds no rows on the other (a new empty table changes no data)."""
    diffs = []
    for name in sorted(set(a) | set(b)):
        left, right = a.get(name), b.get(name)
        rows_a, rows_b = (left.rows if left else None), (right.rows if right else None)
        if (rows_a or 0) != (rows_b or 0):
            changed = True
        elif mode == DataMode.CONTENT and left is not None and right is not None:
            changed = left.digest != right.digest
        else:
            changed = False
        diffs.append(TableDiff(name, rows_a, rows_b, changed))
    return tuple(diffs)


def diff_sequences(a: Mapping[str, int | None], b: Mapping[str, int | None]) -> tuple[SequenceDiff, ...]:
    """Sequences both sides have whose position differs (a new or dropped sequence is a schema change)."""
    return tuple(SequenceDiff(name, a[name], b[name]) for name in sorted(set(a) & set(b)) if a[name] != b[name])


def compare(schema_a: Schema, schema_b: Schema, contents_a: Mapping[str, TableContent],
            contents_b: Mapping[str, TableContent], sequences_a: Mapping[str, int | None],
            sequences_b: Mapping[str, int | None], mode: DataMode) -> Comparison:
    """The comparison of A with B (B's view: `added` is what B has and A has not)."""
    sequences = diff_sequences(sequences_a, sequences_b) if mode == DataMode.CONTENT else ()
    tables = diff_tables(contents_a, contents_b, mode) if mode != DataMode.NONE else ()
    return Comparison(diff_schema(schema_a, schema_b), tables, sequences, mode)


def differences(comparison: Mapping[str, Any], added: str = "added", removed: str = "removed") -> list[str]:
    """A comparison's JSON as one line per difference (what `check:*` reports); `added` and
    `removed` word what B has more or less than A."""
    schema = comparison.get("schema", {})
    lines = [f"{added}: {text}" for text in schema.get("added", [])]
    lines += [f"{removed}: {text}" for text in schema.get("removed", [])]
    lines += [f"changed: {text}" for text in schema.get("changed", [])]
    for table in comparison.get("tables", []):
        if table.get("data_changed"):
            lines.append(f"data: {table_change(table)}")
    for sequence in comparison.get("sequences", []):
        lines.append(f"data: sequence {sequence['name']} at {sequence['value_a']} → {sequence['value_b']}")
    return lines


def table_change(table: Mapping[str, Any]) -> str:
    """`public.users: 3 → 5 rows` or `public.users: 3 rows, content differs`."""
    rows_a, rows_b = table.get("rows_a"), table.get("rows_b")
    left = "no table" if rows_a is None else f"{rows_a}"
    right = "no table" if rows_b is None else f"{rows_b}"
    if rows_a == rows_b:
        return f"{table['name']}: {rows_a} rows, content differs"
    return f"{table['name']}: {left} → {right} rows"
