"""`sqlrs check:django --backwards` (issue 25) on examples/django-polls, copied so a test may break
a migration's reverse: real PostgreSQL, real Django (the test's Python, as the CLI's).

Native only: the check meets the runtime only through instances, which test_questions.py covers on
a container runtime too, and a check of the example's 25 migrations is the slowest question there is
(each migration's parent and own state, an undo and a comparison). Its own module, so the suite's
workers run it beside test_questions.py rather than after it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, write

pytestmark = pytest.mark.timeout(900)
SQLRS_RUNTIMES = ("native",)

DJANGO_EXAMPLE = REPO / "examples" / "django-polls"
# tags.0004_x and tags.0004_y branch from tags.0003 and are merged by tags.0005; Django plans y, then
# x (its DFS takes a merge's parents in reverse order). Django's migrate has no target that unapplies
# x alone (`migrate tags 0003` would take y too); y cannot be unapplied at all (RunSQL without
# reverse_sql), so x restores only if it was unapplied alone.
BRANCHES = {
    "0004_x.py": """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tags", "0003_tag_color")]
    operations = [migrations.RunSQL("CREATE TABLE tags_audit (id int PRIMARY KEY, note text)",
                                    reverse_sql="DROP TABLE tags_audit")]
""",
    "0004_y.py": """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tags", "0003_tag_color")]
    operations = [migrations.RunSQL("CREATE TABLE tags_y (id int)")]
""",
    "0005_merge.py": """from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tags", "0004_x"), ("tags", "0004_y")]
    operations = []
""",
}


def django_project(workspace: Path) -> Path:
    target = workspace / "polls"
    shutil.copytree(DJANGO_EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


def test_every_migration_of_the_django_example_unapplies_to_its_parent(sqlrs_runtime: Sqlrs,
                                                                       workspace: Path) -> None:
    sq = sqlrs_runtime
    root = django_project(workspace)
    result = sq.run("check:django", "--backwards", *sq.runtime_flags(), cwd=root)
    assert result.returncode == 0, result.stderr
    migrations = [str(row["source"]).split()[0] for row in sq.plan_input("django", cwd=root)[1:]]
    parents = ["base", *migrations[:-1]]
    # one line per migration, in Django's plan order (Django's own apps first), each on the one before
    assert result.stdout.splitlines() == [f"{name} (on {parent}): restores"
                                          for name, parent in zip(migrations, parents, strict=True)]
    assert "polls.0003_seed_and_backfill_slugs" in migrations  # a data migration, unseeded by its reverse
    assert f"{len(migrations)} migrations: every migration restores when unapplied" in result.stderr
    assert sq.instances() == []


def test_a_migration_whose_reverse_does_not_restore_is_named(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = django_project(workspace)
    seed = root / "polls" / "migrations" / "0003_seed_and_backfill_slugs.py"
    # the sample poll (a question, three choices) stays when the migration is unapplied
    seed.write_text(seed.read_text().replace("migrations.RunPython(seed_and_backfill, unseed)",
                                             "migrations.RunPython(seed_and_backfill, migrations.RunPython.noop)"))
    result = sq.run("check:django", "--backwards", *sq.runtime_flags(), "-o", "json", cwd=root)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["restores"] is False and len(report["migrations"]) == len(sq.plan_input("django", cwd=root)) - 1
    assert [r for r in report["migrations"] if not r["restores"]] == [
        {"migration": "polls.0003_seed_and_backfill_slugs", "parent": "polls.0002_question_slug", "restores": False,
         "differences": ["data: public.polls_choice: 0 → 3 rows", "data: public.polls_question: 0 → 1 rows"]}]
    # the same from a test, through the pytest plugin's helper (tests/test_backwards.py of the example)
    options = ["--sqlrs-runtime", sq.runtime] + (["--sqlrs-image", sq.image] if sq.image else [])
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
                            "tests/test_backwards.py"], cwd=root, env=sq.env, capture_output=True, text=True,
                           timeout=800, check=False)
    assert suite.returncode == 1, suite.stdout[-3000:]
    assert ("AssertionError: migrations that do not restore their parent's state when unapplied: "
            "polls.0003_seed_and_backfill_slugs") in suite.stdout
    assert ("polls.0003_seed_and_backfill_slugs (on polls.0002_question_slug): does not restore: "
            "data: public.polls_choice: 0 → 3 rows; data: public.polls_question: 0 → 1 rows") in suite.stdout
    # branches merged later: the sibling applied second is unapplied alone; a migration that cannot be
    # unapplied is named with Django's error, and the next one is still checked (by a new runner:
    # the failed one stopped)
    for name, text in BRANCHES.items():
        write(root / "tags" / "migrations" / name, text)
    text_run = sq.run("check:django", "--backwards", *sq.runtime_flags(), "--to", "tags.0005", cwd=root)
    assert text_run.returncode == 1, text_run.stderr
    irreversible, *rest = text_run.stdout.splitlines()[-3:]
    # Django's own words differ between its versions ("Operation <RunSQL ...> in tags.0004_y is not
    # reversible", "You cannot reverse this operation")
    assert irreversible.startswith("tags.0004_y (on tags.0003_tag_color): does not restore: undo failed: "
                                   "django.db.migrations.exceptions.IrreversibleError: "), irreversible
    assert rest == ["tags.0004_x (on tags.0004_y): restores", "tags.0005_merge (on tags.0004_x): restores"]
    assert "1 does not restore (tags.0004_y)" in text_run.stderr
    assert sq.instances() == []


