"""prepare:django / plan:django, the manage.py test runner and pytest-django on examples/django-polls
(issue 23), on every runtime.

Real Django (the test's own Python environment, as the CLI's), real PostgreSQL, real containers.
The example is copied into a temporary project for each test, so tests may add migrations; the
module's tests share one state directory (its cache) per runtime.
"""

from __future__ import annotations

import collections
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, collected_tests, psql, write

pytestmark = pytest.mark.timeout(1200)
SQLRS_RUNTIMES = ("native", "podman")  # Django reaches a container's server over TCP as a native one (conftest.py)

EXAMPLE = REPO / "examples" / "django-polls"
# the project's own migrations; contenttypes (2) and auth (12) come first in Django's plan
OWN = ["accounts.0001_initial", "accounts.0002_profile_timezone", "accounts.0003_moderators_group",
       "polls.0001_initial", "polls.0002_question_slug", "polls.0003_seed_and_backfill_slugs",
       "polls.0004_question_slug_unique", "polls.0005_choice_position",
       "tags.0001_initial", "tags.0002_seed_tags", "tags.0003_tag_color"]
MIGRATIONS = 25

MIGRATION = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tags", "{parent}")]
    operations = [{operation}]
'''
ADD_DESCRIPTION = 'migrations.AddField("tag", "description", models.TextField(default="", blank=True))'


def project(workspace: Path, name: str = "polls") -> Path:
    """A copy of the example (its own path: keys must not depend on where a project lives)."""
    target = workspace / name
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


def add_tags_migration(root: Path, name: str, parent: str, operation: str) -> Path:
    """A migration of the app Django plans last: it is the last row of the plan."""
    return write(root / "tags" / "migrations" / f"{name}.py", MIGRATION.format(parent=parent, operation=operation))


def prepare(sq: Sqlrs, root: Path, *args: str) -> str:
    return sq.prepare_input("django", *args, cwd=root)


def plan(sq: Sqlrs, root: Path, *args: str) -> list[dict]:
    return sq.plan_input("django", *args, cwd=root)


def migration(row: dict) -> str:
    return str(row["source"]).split()[0]


def django_test_cases(root: Path) -> int:
    """The apps' Django TestCases (`*/tests.py`): what `manage.py test` runs. pytest runs them too,
    and the pytest-only checks in tests/ (the backwards check)."""
    return collected_tests(root, *sorted(str(path.relative_to(root)) for path in root.glob("*/tests.py")))


def sqlrs_options(sq: Sqlrs, prefix: str) -> list[str]:
    """The runtime (and image) as the test runner (`--sqlrs-...`) or the plugin takes them."""
    return [f"{prefix}runtime", sq.runtime] + ([f"{prefix}image", sq.image] if sq.image else [])


def databases_by_process(log: Path) -> dict[str, set[str]]:
    """POLLS_DB_LOG: which database each process's test classes ran on."""
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for line in log.read_text().splitlines():
        pid, database, _label = line.split(" ", 2)
        seen[pid].add(database)
    return seen


def test_prepare_django_builds_one_state_per_migration(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    before = plan(sq, root)
    assert [row["kind"] for row in before] == ["base"] + ["django"] * MIGRATIONS
    order = [migration(row) for row in before[1:]]
    assert order[:2] == ["contenttypes.0001_initial", "contenttypes.0002_remove_content_type_name"]
    assert [name for name in order if name.split(".")[0] in ("accounts", "polls", "tags")] == OWN
    assert order.index("auth.0012_alter_user_first_name_max_length") < order.index("accounts.0003_moderators_group")
    assert before[order.index("polls.0001_initial") + 1]["source"] == (
        "polls.0001_initial polls/migrations/0001_initial.py")
    assert all(row["parent_id"] == prev["state_id"] for prev, row in itertools.pairwise(before))

    dsn = prepare(sq, root)
    assert psql(dsn, "SELECT count(*) FROM django_migrations") == str(MIGRATIONS)
    assert psql(dsn, "SELECT slug FROM polls_question") == "whats-your-favourite-database-1"
    assert psql(dsn, "SELECT string_agg(name, ',' ORDER BY name) FROM tags_tag") == "databases,general,python"
    assert psql(dsn, "SELECT name FROM auth_group") == "moderators"
    assert psql(dsn, "SELECT count(*) FROM django_content_type WHERE app_label IN ('polls', 'tags')") == "3"
    sq.remove_dsn(dsn)

    after = plan(sq, root)
    assert [row["state_id"] for row in after] == [row["state_id"] for row in before]
    assert all(row["cached"] for row in after)
    kinds = {state["id"]: state["kind"] for state in sq.states()}
    kept = [row for row in after[1:] if row["checkpoint"]]  # the last two migrations at least
    assert kept[-2:] == after[-2:] and all(kinds[row["state_id"]] == "django" for row in kept)

    # --to: what `migrate polls 0003` applies to an empty database (polls needs no other app)
    upto = plan(sq, root, "--to", "polls.0003")
    assert [migration(row) for row in upto[1:]] == OWN[3:6]
    dsn = prepare(sq, root, "--to", "polls.0003")
    assert psql(dsn, "SELECT slug FROM polls_question") == "whats-your-favourite-database-1"
    assert psql(dsn, "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('tags_tag', "
                     "'auth_user')") == "0"
    sq.remove_dsn(dsn)


# what a database's schema and Django's bookkeeping are, by catalog queries (any server version)
SCHEMA_QUERIES = [
    "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') FROM "
    "information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2, 3",
    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "SELECT app_label, model FROM django_content_type ORDER BY 1, 2",
    "SELECT ct.app_label, p.codename, p.name FROM auth_permission p JOIN django_content_type ct "
    "ON ct.id = p.content_type_id ORDER BY 1, 2",
    "SELECT app, name FROM django_migrations ORDER BY 1, 2",
    "SELECT name, color FROM tags_tag ORDER BY 1",
    "SELECT question_text, slug FROM polls_question ORDER BY 1",
]


def test_the_state_is_what_manage_py_migrate_makes(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    """One migration per step gives the database one `manage.py migrate` gives (ids of content
    types and permissions aside: they are created as their model appears)."""
    sq = sqlrs_runtime
    root = project(workspace)
    stepwise = prepare(sq, root)
    empty = sq.prepare("-c", "SELECT 1", cwd=root)
    from urllib.parse import urlsplit

    url = urlsplit(empty)
    env = {**sq.env, "PGHOST": str(url.hostname), "PGPORT": str(url.port), "PGUSER": str(url.username),
           "PGPASSWORD": str(url.password), "PGDATABASE": url.path.lstrip("/")}
    result = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for query in SCHEMA_QUERIES:
        assert psql(stepwise, query) == psql(empty, query), query
    sq.remove_dsn(stepwise)
    sq.remove_dsn(empty)


def test_adding_a_migration_builds_only_it(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace, "elsewhere")
    sq.remove_dsn(prepare(sq, root))  # cached from the first test, or built now
    add_tags_migration(root, "0004_tag_description", "0003_tag_color", ADD_DESCRIPTION)
    rows = plan(sq, root)
    assert [row["cached"] for row in rows] == [True] * (MIGRATIONS + 1) + [False]
    assert rows[-1]["source"] == "tags.0004_tag_description tags/migrations/0004_tag_description.py"
    states_before = {state["id"] for state in sq.states()}
    dsn = prepare(sq, root)
    assert {state["id"] for state in sq.states()} - states_before == {rows[-1]["state_id"]}
    assert psql(dsn, "SELECT count(*) FROM tags_tag WHERE description = ''") == "3"
    sq.remove_dsn(dsn)
    # the settings module is not keyed (a CI variant of the same project finds the same states)
    (root / "polls_site" / "settings_ci.py").write_text("from polls_site.settings import *  # noqa\nDEBUG = True\n")
    assert [row["state_id"] for row in plan(sq, root, "--settings", "polls_site.settings_ci")] == [
        row["state_id"] for row in rows]
    # editing a migration keys it anew, and the states after it
    data = root / "tags" / "migrations" / "0002_seed_tags.py"
    data.write_text(data.read_text().replace('"python"]', '"python", "django"]'))
    edited = plan(sq, root)
    first = next(index for index, row in enumerate(edited) if migration(row) == "tags.0002_seed_tags")
    # the edited migration and all after it are built, from the deepest kept state before it (which
    # the earlier migration before it, passed by the first build, becomes: a branch point)
    cached = [row["cached"] for row in edited]
    start = cached.index(False)
    assert start <= first and cached == [True] * start + [False] * (len(edited) - start)
    assert start == first or edited[first - 1]["keep"] == "branch point"


def test_a_failing_migration_is_named_and_earlier_ones_stay_cached(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    add_tags_migration(root, "0004_tag_description", "0003_tag_color", ADD_DESCRIPTION)
    add_tags_migration(root, "0005_broken", "0004_tag_description",
                       'migrations.RunSQL("INSERT INTO no_such_table VALUES (1)")')
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("prepare:django", *sq.runtime_flags(), cwd=root)
    assert result.returncode == 1, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("sqlrs: error:"))
    assert "migration tags.0005_broken" in error and "tags/migrations/0005_broken.py" in error, error
    assert "no_such_table" in error and "does not exist" in error, error
    assert "Traceback" not in result.stderr.split("sqlrs: error:")[-1]
    rows = plan(sq, root)
    assert [row["cached"] for row in rows] == [True] * (MIGRATIONS + 2) + [False]
    assert {i["id"] for i in sq.instances()} == instances_before
    assert not list((sq.state_dir / "store" / "scratch").iterdir())


def test_composites_kind_database_and_from(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    instances_before = {i["id"] for i in sq.instances()}
    result = sq.run("-q", "prepare:django", *sq.runtime_flags(), "--to", "tags.0002", "run:psql", "--", "-At", "-c",
                    "SELECT count(*) FROM tags_tag", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    result = sq.run("-q", "prepare:django", *sq.runtime_flags(), "--kind", "database", "run:psql", "--", "-At", "-c",
                    "SELECT current_database() <> 'postgres', count(*) FROM polls_choice", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "t|3"
    assert {i["id"] for i in sq.instances()} == instances_before  # the throwaway instances are gone

    # --from: the migrations on top of an existing state (here one with a table of another system)
    legacy = sq.plan("-c", "CREATE TABLE legacy_orders (id int)", cwd=root)[-1]["state_id"]
    sq.remove_dsn(sq.prepare("-c", "CREATE TABLE legacy_orders (id int)", cwd=root))
    rows = plan(sq, root, "--from", legacy, "--to", "polls.0002")
    assert rows[0]["kind"] == "state" and rows[0]["state_id"] == legacy
    assert rows[1]["parent_id"] == legacy and [migration(row) for row in rows[1:]] == OWN[3:5]
    result = sq.run("-q", "prepare:django", *sq.runtime_flags(), "--from", legacy, "--to", "polls.0002", "run:psql",
                    "--", "-At", "-c", "SELECT count(*) FROM legacy_orders, django_migrations", cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_python_api(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    import sqlrs

    sq = sqlrs_runtime
    root = project(workspace)
    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=root)
    rows = client.plan(django="manage.py", to="tags.0001")
    assert migration(rows[-1]) == "tags.0001_initial" and all(row["kind"] == "django" for row in rows[1:])
    state = client.build(django=root)  # the project's directory will do as well as its manage.py
    assert state.id == plan(sq, root)[-1]["state_id"]
    with client.instance(django="manage.py", kind="database") as db, db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM django_migrations").fetchone() == (MIGRATIONS,)
    with pytest.raises(sqlrs.UsageError, match="one input kind"):
        client.build(alembic="alembic.ini", django="manage.py")
    with pytest.raises(sqlrs.UsageError, match="has no migration"):
        client.build(django="manage.py", to="polls.0099")


def test_manage_py_test_with_the_sqlrs_runner_in_parallel(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    log = workspace / "databases.log"
    command = [sys.executable, "manage.py", "test", "--parallel", "2", *sqlrs_options(sq, "--sqlrs-")]
    result = subprocess.run(command, cwd=root, env={**sq.env, "POLLS_DB_LOG": str(log)}, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"Ran {django_test_cases(root)} tests" in result.stderr and "\nOK" in result.stderr, result.stderr[-3000:]
    assert "Using sqlrs for the test database of alias 'default' and 2 for parallel workers" in result.stderr
    databases = databases_by_process(log)
    assert len(databases) == 2, databases  # two worker processes, each on one database of its own
    assert all(len(names) == 1 for names in databases.values())
    assert len(set().union(*databases.values())) == 2
    assert not sq.instances()  # the test database and the clones were removed

    # --keepdb: the instances outlive the run under stable names; the next run starts afresh
    log.unlink()
    kept_run = [*command, "--keepdb"]
    for _ in range(2):
        result = subprocess.run(kept_run, cwd=root, env={**sq.env, "POLLS_DB_LOG": str(log)}, capture_output=True,
                                text=True, timeout=900, check=False)
        assert result.returncode == 0, result.stderr[-5000:]
        kept = sq.instances()
        assert len(kept) == 3 and all(str(i["name"]).startswith("django-test-") for i in kept), kept
    for instance in kept:
        assert sq.run("rm", instance["id"]).returncode == 0


def test_pytest_django_with_xdist(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    log = workspace / "databases.log"
    # the example's check of every migration's reverse is test_questions_django.py's: here, the
    # plugin's test databases under xdist
    skip = "--ignore=tests/test_backwards.py"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", skip,
                             *sqlrs_options(sq, "--sqlrs-")], cwd=root, env={**sq.env, "POLLS_DB_LOG": str(log)},
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{collected_tests(root, skip)} passed" in result.stdout, result.stdout[-2000:]
    assert "(gw0)" in result.stdout and "(gw1)" in result.stdout  # both workers took their database from sqlrs
    databases = databases_by_process(log)
    assert len(databases) == 2 and all(len(names) == 1 for names in databases.values()), databases
    assert len(set().union(*databases.values())) == 2
    assert not sq.instances()
