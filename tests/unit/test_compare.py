"""Comparing two databases: the domain's diff (sqlrs.domain.compare) and the compare service wired
on fakes (tests/fakes.py: a fake database's schema and rows are what its applied.sql declares)."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from fakes import Fakes, prepare, wired

from sqlrs.domain.compare import (
    DataMode,
    DbObject,
    Schema,
    TableContent,
    common_columns,
    compare,
    diff_schema,
    diff_tables,
    differences,
)
from sqlrs.domain.errors import Ambiguous, NotFound, UsageError
from sqlrs.entrypoints.engine.bootstrap import Services
from sqlrs.services.requests import parse_compare

TABLE = DbObject("table", "public.users")
ID = DbObject("column", "public.users.id", "integer NOT NULL", parent="table public.users")
EMAIL = DbObject("column", "public.users.email", "text", parent="table public.users")
SEQ = DbObject("sequence", "public.users_id_seq", "AS integer OWNED BY public.users.id", parent="table public.users")
PKEY = DbObject("constraint", "users_pkey on public.users", "PRIMARY KEY (id)", parent="table public.users")


def schema(*objects: DbObject, tables: dict[str, tuple[str, ...]] | None = None) -> Schema:
    return Schema(objects, tables or {})


def test_a_new_table_is_one_entry_with_its_columns_and_its_constraints_beside_it() -> None:
    diff = diff_schema(schema(), schema(TABLE, ID, EMAIL, SEQ, PKEY))
    assert diff.added == ("table public.users (id integer NOT NULL, email text)",
                          "constraint users_pkey on public.users PRIMARY KEY (id)")
    assert diff.removed == () and diff.changed == ()
    assert diff_schema(schema(TABLE, ID, EMAIL, SEQ, PKEY), schema()).removed == diff.added


def test_columns_of_a_table_both_have_are_listed_one_by_one() -> None:
    wider = DbObject("column", "public.users.email", "character varying(200) NOT NULL", parent="table public.users")
    diff = diff_schema(schema(TABLE, ID), schema(TABLE, ID, EMAIL))
    assert diff.added == ("column public.users.email text",)
    diff = diff_schema(schema(TABLE, ID, EMAIL), schema(TABLE, ID, wider))
    assert diff.changed == ("column public.users.email: text → character varying(200) NOT NULL",)


def test_a_definition_only_change_says_so_and_column_order_does_not_count() -> None:
    view = DbObject("view", "public.v", "(id)", definition="SELECT 1 AS id")
    other = DbObject("view", "public.v", "(id)", definition="SELECT 2 AS id")
    assert diff_schema(schema(view), schema(other)).changed == ("view public.v: definition changed",)
    assert diff_schema(schema(TABLE, ID, EMAIL), schema(TABLE, EMAIL, ID)).empty


def test_ignored_relations_go_with_everything_that_belongs_to_them() -> None:
    version = DbObject("table", "public.alembic_version")
    column = DbObject("column", "public.alembic_version.version_num", "text", parent="table public.alembic_version")
    full = schema(TABLE, ID, version, column, tables={"public.users": ("id",), "public.alembic_version": ("x",)})
    for ignored in (["alembic_version"], ["public.alembic_version"]):
        kept = full.without(ignored)
        assert kept.objects == (TABLE, ID) and set(kept.tables) == {"public.users"}


def test_data_compares_counts_then_digests_and_a_missing_table_is_empty() -> None:
    a = {"t": TableContent(3, "x"), "u": TableContent(1, "y"), "gone": TableContent(0, "e")}
    b = {"t": TableContent(3, "z"), "u": TableContent(2, "y"), "new": TableContent(5, "n")}
    changed = {t.name: (t.rows_a, t.rows_b, t.data_changed) for t in diff_tables(a, b, DataMode.CONTENT)}
    assert changed == {"t": (3, 3, True), "u": (1, 2, True), "gone": (0, None, False), "new": (None, 5, True)}
    by_rows = {t.name: t.data_changed for t in diff_tables(a, b, DataMode.ROWS)}
    assert by_rows == {"t": False, "u": True, "gone": False, "new": True}


def test_digests_cover_the_columns_both_sides_have() -> None:
    a = schema(tables={"t": ("a", "b"), "only_a": ("x",)})
    b = schema(tables={"t": ("c", "b", "a")})
    assert common_columns(a, b) == {"only_a": ("x",), "t": ("a", "b")}


def test_a_comparison_is_equal_only_without_any_difference() -> None:
    same = compare(schema(TABLE), schema(TABLE), {"t": TableContent(1, "d")}, {"t": TableContent(1, "d")},
                   {"s": 3}, {"s": 3}, DataMode.CONTENT)
    assert same.equal and same.to_json()["tables"] == [{"name": "t", "rows_a": 1, "rows_b": 1,
                                                         "data_changed": False}]
    moved = compare(schema(TABLE), schema(TABLE), {}, {}, {"s": 3}, {"s": 5}, DataMode.CONTENT)
    assert not moved.equal and moved.to_json()["sequences"] == [{"name": "s", "value_a": 3, "value_b": 5}]
    assert compare(schema(TABLE), schema(TABLE), {}, {}, {"s": 3}, {"s": 5}, DataMode.ROWS).equal
    lines = differences(compare(schema(TABLE), schema(TABLE, EMAIL), {"t": TableContent(1, "a")},
                                {"t": TableContent(2, "b")}, {}, {}, DataMode.CONTENT).to_json(),
                        added="left behind", removed="missing")
    assert lines == ["left behind: column public.users.email text", "data: t: 1 → 2 rows"]


def test_compare_requests_are_checked() -> None:
    assert parse_compare({"a": "x", "b": "y", "ignore": ["v"]}).ignore == ("v",)
    for bad in ({"a": "x"}, {"a": "", "b": "y"}, {"a": "x", "b": "y", "data": "all"}, {"a": "x", "b": "y", "z": 1}):
        with pytest.raises(UsageError, match=r"invalid|data must|non-empty"):
            parse_compare(bad)


# -- the service on fakes ---------------------------------------------------------------------------
Wired = tuple[Services, Fakes]
USERS = "OBJECT table|public.users||"
USERS_ID = "OBJECT column|public.users.id|integer|table public.users"


@pytest.fixture
def engine() -> Iterator[Wired]:
    with wired({"warm.enabled": False}) as pair:
        yield pair


def test_two_states_compare_through_instances_that_are_removed_afterwards(engine: Wired) -> None:
    services, fakes = engine
    before = prepare(services, USERS, USERS_ID, "ROWS public.users 2 d1", build_only=True)["state_id"]
    after = prepare(services, USERS, USERS_ID, "ROWS public.users 2 d1",
                    "OBJECT column|public.users.email|text|table public.users", "ROWS public.users 2 d2",
                    build_only=True)["state_id"]
    result = services.compare.compare(before[:10], after)
    assert result["equal"] is False
    assert result["schema"] == {"added": ["column public.users.email text"], "removed": [], "changed": []}
    assert result["tables"] == [{"name": "public.users", "rows_a": 2, "rows_b": 2, "data_changed": True}]
    assert (result["a"]["kind"], result["a"]["id"], result["b"]["id"]) == ("state", before, after)
    assert fakes.repo.list_instances() == [] and fakes.runtime.running() == []  # the readers are gone
    assert services.compare.compare(after, after)["equal"] is True


def test_an_instance_is_read_as_it_is_and_kept(engine: Wired) -> None:
    services, fakes = engine
    made = prepare(services, USERS, USERS_ID, name="dev")
    instance = fakes.repo.get_instance(made["instance_id"])
    assert instance is not None
    with open(services.layout.abs(instance.data_path) / "applied.sql", "a") as handle:
        handle.write("DROP column|public.users.id\n")
    result = services.compare.compare(made["state_id"], "dev", data=DataMode.NONE)
    assert result["schema"]["removed"] == ["column public.users.id integer"] and result["tables"] == []
    assert result["b"] == {"ref": "dev", "kind": "instance", "id": instance.id, "state_id": made["state_id"],
                           "name": "dev"}
    assert [i.id for i in fakes.repo.list_instances()] == [instance.id]


def test_unknown_and_ambiguous_references(engine: Wired) -> None:
    services, fakes = engine
    state = prepare(services, USERS, build_only=True)["state_id"]
    with pytest.raises(NotFound, match="no state, instance or name matches 'nope'"):
        services.compare.compare(state, "nope")
    made = fakes.repo.get_instance(prepare(services, USERS)["instance_id"])
    assert made is not None
    twin = attrs.evolve(made, id=state[:12])  # an instance id that is also a prefix of the state's
    fakes.repo.add_instance(twin)
    with pytest.raises(Ambiguous, match="matches instance"):
        services.compare.find(state[:6])
    assert services.compare.find(state[:12]).id == twin.id  # an exact instance id wins
    assert services.compare.find(state[:13]).id == state
    assert fakes.inspector.reads == []


def test_a_comparison_asks_for_no_warm_instances_of_what_it_read() -> None:
    """check:alembic compares every revision's state once: keeping warm servers of each of them
    for the idle time (what a user's instance asks for) would fill the machine with servers."""
    with wired() as (services, fakes):
        state = prepare(services, USERS, USERS_ID, build_only=True)["state_id"]
        assert services.compare.compare(state, state)["equal"] is True
        assert services.pool.status()["states"] == [] and fakes.repo.list_instances() == []
        kept = services.catalog.find(state)
        made = services.instances.create(kept, *services.identities.of_state(kept, None))
        services.instances.remove(made)  # a user's server instance: a warm one of the state follows
        assert [entry["state_id"] for entry in services.pool.status()["states"]] == [state]
