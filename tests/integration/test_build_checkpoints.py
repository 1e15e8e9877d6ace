"""Checkpoints (docs/decisions/0009): a chain is built in one server and only some of its steps are
kept as states; whatever is kept, every prepare gives exactly what the files say, after an edit
anywhere, and plans say what is kept and what a build starts from. Native runtime, real PostgreSQL,
on the default (copy) store; test_backends_e2e runs `check` on the copy-on-write stores."""

from __future__ import annotations

from pathlib import Path

from harness import DATASETS, Sqlrs, golden, psql, write

STEPS = 14
EXTRA = ("schema.relations", "schema.columns")  # what the extra tables of the Sakila test change


def write_history(workspace: Path, versions: dict[int, str]) -> list[str]:
    """STEPS migration files: the first creates a table, each other adds a row naming its version."""
    names = []
    for index in range(1, STEPS + 1):
        name = f"{index:02d}-migration.sql"
        version = versions.get(index, "v1")
        if index == 1:
            text = f"CREATE TABLE history (step int PRIMARY KEY, version text); -- {version}\n"
        else:
            text = f"INSERT INTO history VALUES ({index}, '{version}');\nSELECT pg_sleep(0.02);\n"
        write(workspace / name, text)
        names.append(name)
    return names


def expected(versions: dict[int, str]) -> str:
    return ",".join(f"{index}:{versions.get(index, 'v1')}" for index in range(2, STEPS + 1))


def args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("-f", name)]


def check(sq: Sqlrs, workspace: Path, versions: dict[int, str]) -> list[dict[str, object]]:
    names = write_history(workspace, versions)
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert psql(dsn, "SELECT string_agg(step || ':' || version, ',' ORDER BY step) FROM history") \
        == expected(versions)
    plan = sq.plan(*args(names), cwd=workspace)
    assert all(row["cached"] for row in plan)
    assert plan[-1]["checkpoint"] and plan[-2]["checkpoint"]  # the last step and the one before it
    return plan


def test_edits_anywhere_rebuild_what_the_files_say(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    check(sq, workspace, {})
    kept = {state["id"] for state in sq.states()}
    assert len(kept) < STEPS + 1  # not every step is a state
    versions: dict[int, str] = {}
    for index in (8, 2, STEPS, 5):
        versions[index] = f"v{len(versions) + 2}"
        names = write_history(workspace, versions)
        before = sq.plan(*args(names), cwd=workspace)
        start = max(row["index"] for row in before if row["cached"])
        assert start < index  # the edited step and what follows it are built
        assert (not before[index]["cached"] and before[index - 1]["checkpoint"]) or start < index - 1
        check(sq, workspace, versions)
    # the first version again: its last state is still kept, nothing is built
    names = write_history(workspace, {})
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert psql(dsn, "SELECT count(*) FROM history WHERE version = 'v1'") == str(STEPS - 1)
    assert {state["id"] for state in sq.states()} >= kept


def test_a_middle_edit_keeps_the_state_before_it_as_a_branch_point(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    check(sq, workspace, {})
    names = write_history(workspace, {9: "v2"})
    plan = sq.plan(*args(names), cwd=workspace)
    assert plan[8]["keep"] in ("branch point", None) or plan[8]["cached"]
    if not plan[8]["cached"]:
        assert plan[8]["keep"] == "branch point" and plan[8]["checkpoint"]
    check(sq, workspace, {9: "v2"})
    # a second edit of the same step starts from the branch point: nothing before it is built
    plan = sq.plan(*args(write_history(workspace, {9: "v3"})), cwd=workspace)
    assert [row["cached"] for row in plan[:9]] == [True] * 9 and not plan[9]["cached"]


def test_sakila_with_unkept_steps_passes_its_golden_check(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    for name in ("1-postgres-sakila-schema.sql", "2-postgres-sakila-insert-data-using-copy.sql"):
        write(workspace / name, (DATASETS / "sakila" / name).read_text())
    names = ["1-postgres-sakila-schema.sql", "2-postgres-sakila-insert-data-using-copy.sql"]
    for index in range(3, 9):
        name = f"{index:02d}-extra.sql"
        # in a schema of their own; the golden check's schema fingerprints then differ by them only
        write(workspace / name, f"CREATE SCHEMA IF NOT EXISTS extra;\n"
                                f"CREATE TABLE extra.t{index} AS SELECT {index} AS v;\n")
        names.append(name)
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert golden(dsn, "sakila", ignore=EXTRA) == ""
    with (workspace / "05-extra.sql").open("a") as out:
        out.write("INSERT INTO extra.t5 VALUES (55);\n")
    dsn = sq.prepare(*args(names), cwd=workspace)
    assert golden(dsn, "sakila", ignore=EXTRA) == ""
    assert psql(dsn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE nspname = 'public'") == "85"  # schema.relations of golden.expected
    assert psql(dsn, "SELECT string_agg(v::text, ',' ORDER BY v) FROM extra.t5") == "5,55"
    assert psql(dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'extra'") == "6"
