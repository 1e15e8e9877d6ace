"""prepare:alembic / plan:alembic on examples/alembic-shop, on every runtime (issue 15).

Real Alembic (the test's own Python environment, as the CLI's), real PostgreSQL, real
containers. The example is copied into a temporary project for each test, so tests may add
revisions; the module's tests share one state directory (its cache) per runtime.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, psql, step_failure, write

pytestmark = pytest.mark.timeout(900)
SQLRS_RUNTIMES = ("native", "docker")  # Alembic reaches a container's server over TCP as a native one (conftest.py)

EXAMPLE = REPO / "examples" / "alembic-shop"
REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007"]

REVISION = '''"""{message}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
'''


def project(workspace: Path, name: str = "shop") -> Path:
    """A copy of the example (its own path: keys must not depend on where a project lives)."""
    target = workspace / name
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


def add_revision(root: Path, revision: str, down: str, body: str, message: str = "added by a test") -> Path:
    return write(root / "alembic" / "versions" / f"{revision}_test.py",
                 REVISION.format(message=message, revision=revision, down=down, body=body))


def prepare(sq: Sqlrs, root: Path, *args: str) -> str:
    return sq.prepare_input("alembic", *args, cwd=root)


def plan(sq: Sqlrs, root: Path, *args: str) -> list[dict]:
    return sq.plan_input("alembic", *args, cwd=root)


def test_prepare_alembic_builds_one_state_per_revision(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    before = plan(sq, root)
    assert [row["kind"] for row in before] == ["base"] + ["alembic"] * 7
    revisions = [row["source"].split()[0] for row in before[1:]]
    # Alembic's order: 0005 and 0006 are two branches from 0004, merged by 0007
    assert revisions[:4] == REVISIONS[:4] and set(revisions[4:6]) == {"0005", "0006"} and revisions[6] == "0007"
    assert before[1]["source"] == "0001 alembic/versions/0001_create_customers.py"
    assert all(row["parent_id"] == prev["state_id"] for prev, row in itertools.pairwise(before))

    dsn = prepare(sq, root)
    assert psql(dsn, "SELECT version_num FROM alembic_version") == "0007"
    assert psql(dsn, "SELECT string_agg(sku, ',' ORDER BY id) FROM products") == "SKU-0001,SKU-0002,SKU-0003"
    assert psql(dsn, "SELECT email FROM customers WHERE id = 1") == "ada.lovelace@example.com"
    assert psql(dsn, "SELECT sum(quantity) FROM order_items") == "3"
    sq.remove_dsn(dsn)

    after = plan(sq, root)
    assert [row["state_id"] for row in after] == [row["state_id"] for row in before]
    assert all(row["cached"] for row in after)
    kinds = {state["id"]: state["kind"] for state in sq.states()}
    kept = [row for row in after[1:] if row["checkpoint"]]  # the last two revisions at least
    assert kept[-2:] == after[-2:] and all(kinds[row["state_id"]] == "alembic" for row in kept)

    upto = plan(sq, root, "--to", "0004")
    assert [row["state_id"] for row in upto] == [row["state_id"] for row in after[:5]]
    dsn = prepare(sq, root, "--to", "0004")
    assert psql(dsn, "SELECT version_num FROM alembic_version") == "0004"
    assert psql(dsn, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'sku'") == "0"
    sq.remove_dsn(dsn)


def test_adding_a_revision_rebuilds_only_it(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace, "elsewhere")
    prepare_dsn = prepare(sq, root)  # cached from the first test, or built now
    sq.remove_dsn(prepare_dsn)
    add_revision(root, "0008", "0007", 'op.add_column("products", sa.Column("stock", sa.Integer, '
                                       'nullable=False, server_default="10"))')
    rows = plan(sq, root)
    assert [row["cached"] for row in rows] == [True] * 8 + [False]
    assert rows[8]["source"] == "0008 alembic/versions/0008_test.py"
    states_before = {state["id"] for state in sq.states()}
    dsn = prepare(sq, root)
    assert {state["id"] for state in sq.states()} - states_before == {rows[8]["state_id"]}
    assert psql(dsn, "SELECT version_num FROM alembic_version") == "0008"
    assert psql(dsn, "SELECT sum(stock) FROM products") == "30"
    sq.remove_dsn(dsn)

    # the URL in alembic.ini is someone's local database: it does not key the states
    ini = root / "alembic.ini"
    ini.write_text(ini.read_text().replace("shop:shop@localhost:5432/shop", "me:secret@db.example:5433/other"))
    assert all(row["cached"] for row in plan(sq, root))
    # env.py runs for every revision: a comment changes nothing it does, its code keys them all anew
    env_py = root / "alembic" / "env.py"
    commented = env_py.read_text().replace("pool.NullPool,", "pool.NullPool,  # one connection per revision")
    env_py.write_text("# reviewed by the team\n" + commented)
    assert all(row["cached"] for row in plan(sq, root))
    env_py.write_text(env_py.read_text() + "\nconfig.attributes['edited'] = True\n")
    assert [row["cached"] for row in plan(sq, root)] == [True] + [False] * 8


def test_a_failing_revision_is_named_and_earlier_ones_stay_cached(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    add_revision(root, "0008", "0007", 'op.execute("CREATE TABLE audit (id int)")')
    add_revision(root, "0009", "0008", 'op.execute("UPDATE products\\n   SET sku = upper(nmae)")')
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("prepare:alembic", *sq.runtime_flags(), cwd=root)
    # the one-line reason names the revision, its file and line, and the database's error; under it
    # what psql would print: the statement's line with a caret, the HINT, then the statement
    shown = step_failure(result)
    assert shown[0].startswith("step 9 (0009 alembic/versions/0009_test.py) failed: revision 0009 "
                               "(alembic/versions/0009_test.py:12): ERROR:  column \"nmae\" does not exist"), shown
    assert shown[1:4] == ["LINE 2:    SET sku = upper(nmae)", " " * 27 + "^",
                          'HINT:  Perhaps you meant to reference the column "products.name".'], shown
    assert shown[4:6] == ["STATEMENT:  UPDATE products", "               SET sku = upper(nmae)"], shown
    assert "Traceback" not in result.stderr.split("sqlrs: error:")[-1]
    rows = plan(sq, root)
    assert [row["cached"] for row in rows] == [True] * 9 + [False]  # 0008 was built by the failed job
    assert {i["id"] for i in sq.instances()} == instances_before
    assert not list((sq.state_dir / "store" / "scratch").iterdir())


def test_composite_with_run_psql(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("-q", "prepare:alembic", *sq.runtime_flags(), "--to", "0004", "run:psql", "--", "-At", "-c",
                    "SELECT count(*) FROM products", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    assert {i["id"] for i in sq.instances()} == instances_before  # the throwaway instance is gone
    # and as a database of its own in the state's shared server
    result = sq.run("-q", "prepare:alembic", *sq.runtime_flags(), "--to", "0004", "--kind", "database", "run:psql",
                    "--", "-At", "-c", "SELECT current_database() <> 'postgres', count(*) FROM products", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t|3"
    assert {i["id"] for i in sq.instances()} == instances_before


def test_python_api(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    import sqlrs

    sq = sqlrs_runtime
    root = project(workspace)
    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=root)
    rows = client.plan(alembic="alembic.ini", to="0003")
    assert [row["source"].split()[0] for row in rows[1:]] == REVISIONS[:3]
    state = client.build(alembic="alembic.ini")
    assert state.id == plan(sq, root)[-1]["state_id"]
    with client.instance(state=state) as db, db.connect() as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0007",)
    with pytest.raises(sqlrs.UsageError, match="one input kind"):
        client.build(["x.sql"], alembic="alembic.ini")
    with pytest.raises(sqlrs.UsageError, match="Can't locate revision"):
        client.build(alembic="alembic.ini", to="nope")
    add_revision(root, "0008", "0007", 'op.execute("SELECT nmae FROM products")')
    with pytest.raises(sqlrs.OperationFailed) as failed:
        client.build(alembic="alembic.ini")
    assert failed.value.details["line"] == 12 and failed.value.context[:2] == [
        "LINE 1: SELECT nmae FROM products", "               ^"]
    assert str(failed.value).splitlines()[1:4] == [
        "LINE 1: SELECT nmae FROM products", "               ^",
        'HINT:  Perhaps you meant to reference the column "products.name".']


def test_the_example_suite_under_the_plugin_with_xdist(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    options = ["--sqlrs-runtime", sq.runtime] + (["--sqlrs-image", sq.image] if sq.image else [])
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *options],
                            cwd=root, env=sq.env, capture_output=True, text=True, timeout=800, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # the four SQLAlchemy fixtures (sync and async) and the downgrade check among them
    assert "16 passed" in result.stdout, result.stdout[-2000:]
    assert "(gw0)" in result.stdout and "(gw1)" in result.stdout  # both workers used sqlrs
    assert not sq.instances()  # every test's instance was removed


def test_a_failing_revision_in_pytests_output(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    """The plugin fails the tests that need the state with the same report as the CLI."""
    sq = sqlrs_runtime
    root = project(workspace)
    add_revision(root, "0008", "0007", 'op.execute("UPDATE products\\n   SET sku = upper(nmae)")')
    options = ["--sqlrs-runtime", sq.runtime] + (["--sqlrs-image", sq.image] if sq.image else [])
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
                             "tests/test_shop.py::test_placing_an_order"],
                            cwd=root, env=sq.env, capture_output=True, text=True, timeout=800, check=False)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    out = result.stdout.splitlines()
    first = next((i for i, line in enumerate(out) if line.startswith("sqlrs: cannot build the test's state:")), None)
    assert first is not None, result.stdout[-4000:]
    assert "revision 0008 (alembic/versions/0008_test.py:12): ERROR:  column \"nmae\" does not exist" in out[first]
    assert out[first + 1:first + 4] == [
        "LINE 2:    SET sku = upper(nmae)", " " * 27 + "^",
        'HINT:  Perhaps you meant to reference the column "products.name".'], out[first:first + 6]
    assert not sq.instances()
