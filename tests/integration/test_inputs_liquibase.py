"""prepare:lb / plan:lb (issue 15): Liquibase changelogs as chains of cached states, one per changeset.

Real Liquibase 4.x (scripts/install.sh: the npm package under /opt/sqlrs/liquibase, Debian's Java),
real PostgreSQL. The library example is built per changeset and compared with one plain
`liquibase update` of the same changelog on an empty database: schema, data and
DATABASECHANGELOG (minus timestamps and deployment ids) must be equal, and the plan's order
must be the order Liquibase executed the changesets in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import REPO, Sqlrs, psql, write

from sqlrs.changelogs import liquibase_install as install

pytestmark = pytest.mark.timeout(1800)

EXAMPLE = REPO / "examples" / "liquibase-library"
UPDATE = ("update", "--changelog-file=master.xml", "--context-filter=test")
DBCL_COLUMNS = ("id, author, filename, orderexecuted, exectype, md5sum, description, comments, tag, liquibase, "
                "contexts, labels")


def prepare_lb(sq: Sqlrs, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sq.run("prepare:lb", *sq.runtime_flags(), "--", *args, cwd=cwd, timeout=1500)


def plan_lb(sq: Sqlrs, cwd: Path, *args: str) -> list[dict]:
    result = sq.run("plan:lb", *sq.runtime_flags(), "-o", "json", "--", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    rows: list[dict] = json.loads(result.stdout)
    return rows


def database(dsn: str) -> dict[str, str]:
    """Schema, data and DATABASECHANGELOG of the public schema, comparable across databases."""
    tables = psql(dsn, "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
                       "WHERE schemaname = 'public' AND tablename NOT LIKE 'databasechangelog%'").split()
    seen = {
        "columns": psql(dsn, "SELECT table_name, column_name, data_type, is_nullable, column_default "
                             "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"),
        "constraints": psql(dsn, "SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                 "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"),
        "indexes": psql(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
        "views": psql(dsn, "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1"),
        "changelog": psql(dsn, f"SELECT {DBCL_COLUMNS} FROM databasechangelog ORDER BY orderexecuted"),
    }
    for table in tables:
        seen[table] = psql(dsn, f"SELECT coalesce(json_agg(t ORDER BY t::text), '[]') FROM public.{table} t")
    return seen


def plain_update(dsn: str, project: Path, *args: str) -> None:
    """One plain `liquibase update` of the whole changelog, as a user would run it."""
    url = urlsplit(dsn)
    launcher = install.find_launcher(None)
    result = subprocess.run(
        [*install.command(launcher), "--search-path=.", *args[:1],
         f"--url=jdbc:postgresql://{url.hostname}:{url.port}{url.path}",
         f"--username={url.username}", f"--password={url.password}", *args[1:]],
        cwd=project, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def builds(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "] build " in line]


def test_library_per_changeset_equals_plain_update_and_appending_builds_only_the_new_one(
        sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    project = workspace / "library"
    shutil.copytree(EXAMPLE, project)

    plan = plan_lb(sq, project, *UPDATE)
    assert [row["index"] for row in plan] == list(range(14))
    assert plan[0]["kind"] == "base"
    assert {row["kind"] for row in plan[1:]} == {"liquibase"}
    assert not any(row["cached"] for row in plan[1:])

    started = time.monotonic()
    result = prepare_lb(sq, project, *UPDATE)
    cold = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    dsn = result.stdout.strip()
    assert dsn.startswith("postgresql://sqlrs:") and "\n" not in dsn
    assert psql(dsn, "SELECT count(*) FROM author") == "4"
    assert psql(dsn, "SELECT title FROM book JOIN author ON author.id = author_id "
                     "WHERE name LIKE 'Stanis%'") == "Solaris"
    assert psql(dsn, "SELECT count(*) FROM member") == "2"  # context test
    assert psql(dsn, "SELECT refreshed, books FROM catalog_stats") == "1|5"  # runAlways ran once
    assert psql(dsn, "SELECT exectype FROM databasechangelog WHERE id = 'drop-legacy-readers'") == "MARK_RAN"

    # the same changelog applied by one plain `liquibase update` on an empty database
    empty = sq.prepare("-c", "SELECT 1")
    plain_update(empty, project, *UPDATE)
    per_changeset, plain = database(dsn), database(empty)
    assert per_changeset == plain
    # sqlrs's order (read without a JVM) is the order Liquibase ran them in
    ran = [line.split("|") for line in plain["changelog"].splitlines()]
    assert [row["source"] for row in plan[1:]] == [f"{r[2]}::{r[0]}::{r[1]}" for r in ran]

    # appending one changeset: every earlier changeset stays cached, only the new one is built
    loans = project / "changelogs" / "004-loans.sql"
    loans.write_text(loans.read_text() + "\n--changeset grace:loan-returned\n"
                     "ALTER TABLE loan ADD COLUMN returned boolean NOT NULL DEFAULT false;\n")
    plan = plan_lb(sq, project, *UPDATE)
    assert len(plan) == 15
    assert all(row["cached"] for row in plan[:14]), plan
    assert plan[14]["source"] == "changelogs/004-loans.sql::loan-returned::grace" and not plan[14]["cached"]
    assert [row["state_id"] for row in plan[:14]] == [row["state_id"] for row in plan_lb(sq, project, *UPDATE)[:14]]
    started = time.monotonic()
    result = prepare_lb(sq, project, *UPDATE)
    warm = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert len(builds(result.stderr)) == 1 and "loan-returned" in builds(result.stderr)[0], result.stderr
    assert psql(result.stdout.strip(), "SELECT count(*) FROM databasechangelog") == "14"
    print(f"\nprepare:lb library: 13 changesets cold {cold:.1f}s; one appended changeset {warm:.1f}s")

    # a failing changeset names itself and Liquibase's reason; the changesets before it stay cached
    loans.write_text(loans.read_text() + "\n--changeset grace:broken\nINSERT INTO no_such_table VALUES (1);\n")
    result = prepare_lb(sq, project, *UPDATE)
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("sqlrs: error:")]
    assert len(error) == 1, result.stderr
    assert "broken" in error[0] and "grace" in error[0] and "changelogs/004-loans.sql" in error[0], error
    assert 'relation "no_such_table" does not exist' in error[0], error
    assert "Traceback" not in result.stderr
    plan = plan_lb(sq, project, *UPDATE)
    assert all(row["cached"] for row in plan[:15]) and not plan[15]["cached"]


def test_connection_arguments_and_other_commands_are_refused(sqlrs_native: Sqlrs, workspace: Path) -> None:
    project = workspace / "library"
    shutil.copytree(EXAMPLE, project)
    for bad in (("update", "--changelog-file=master.xml", "--url=jdbc:postgresql://localhost/x"),
                ("--username=me", "update", "--changelog-file=master.xml"),
                ("update", "--changelog-file=master.xml", "--password", "secret")):
        result = prepare_lb(sqlrs_native, project, *bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("sqlrs: error: --") and "refused" in result.stderr, result.stderr
        assert "hint:" in result.stderr
    result = prepare_lb(sqlrs_native, project, "rollback", "--changelog-file=master.xml")
    assert result.returncode == 2 and "update" in result.stderr
    result = prepare_lb(sqlrs_native, project, "update", "--changelog-file=nope.xml")
    assert result.returncode == 2 and "nope.xml" in result.stderr
    result = prepare_lb(sqlrs_native, project, "update", "--changelog-file=master.xml", "--search-path=/not/here")
    assert result.returncode == 2 and "/not/here" in result.stderr
    missing = sqlrs_native.run("prepare:lb", "--runtime", "native", "--", "update", "--changelog-file=master.xml",
                               cwd=project, env={"SQLRS_LIQUIBASE": "/nowhere/liquibase"})
    assert missing.returncode == 2 and "no Liquibase at /nowhere/liquibase" in missing.stderr
    assert "install.sh" in missing.stderr
    assert not (sqlrs_native.state_dir / "engine.json").exists()  # refused before any engine starts


SMALL = {
    "db/main.xml": """<?xml version="1.0" encoding="UTF-8"?>
<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://www.liquibase.org/xml/ns/dbchangelog
        http://www.liquibase.org/xml/ns/dbchangelog/dbchangelog-4.20.xsd">
    <changeSet id="planet" author="kepler">
        <createTable tableName="planet">
            <column name="name" type="varchar(20)"><constraints primaryKey="true"/></column>
            <column name="moons" type="int"/>
        </createTable>
    </changeSet>
    <include file="more/moons.yaml" relativeToChangelogFile="true"/>
    <include file="more/rings.sql"/>
</databaseChangeLog>
""",
    "db/more/moons.yaml": """databaseChangeLog:
  - changeSet:
      id: load-planets
      author: kepler
      changes:
        - loadData:
            tableName: planet
            file: planets.csv
            relativeToChangelogFile: true
            columns:
              - column: {name: name, type: string}
              - column: {name: moons, type: numeric}
""",
    "db/more/planets.csv": "name,moons\nMercury,0\nEarth,1\nMars,2\nJupiter,95\n",
    "db/more/rings.sql": "--liquibase formatted sql\n--changeset galileo:rings\n"
                         "ALTER TABLE planet ADD COLUMN ringed boolean NOT NULL DEFAULT false;\n"
                         "UPDATE planet SET ringed = true WHERE name = 'Jupiter';\n",
}


def test_composite_prepare_lb_run_psql_on_every_runtime(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    for path, text in SMALL.items():
        write(workspace / path, text)
    args = ("update", "--changelog-file=main.xml", "--search-path=db")
    before = {i["id"] for i in sq.instances()}
    result = sq.run("prepare:lb", *sq.runtime_flags(), "--", *args, "run:psql", "--", "-At", "-c",
                    "SELECT name, moons, ringed FROM planet ORDER BY moons DESC LIMIT 2",
                    "-c", "SELECT string_agg(filename || ':' || id, ',' ORDER BY orderexecuted) FROM databasechangelog",
                    cwd=workspace, timeout=1500)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Jupiter|95|t", "Mars|2|f",
        "main.xml:planet,more/moons.yaml:load-planets,more/rings.sql:rings"], result.stdout
    assert {i["id"] for i in sq.instances()} == before  # the composite's instance is gone
    plan = plan_lb(sq, workspace, *args)
    assert [row["cached"] for row in plan] == [True, True, True, True]
    assert [row["kind"] for row in plan] == ["base", "liquibase", "liquibase", "liquibase"]


def test_appending_an_include_keeps_the_earlier_changesets_cached(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """Issue 22.1: a master changelog grows by one include line per new file (JHipster's way);
    every changeset before it stays cached and only the new file's changeset is built."""
    sq = sqlrs_native
    for path, text in SMALL.items():
        write(workspace / path, text)
    args = ("update", "--changelog-file=main.xml", "--search-path=db")
    assert prepare_lb(sq, workspace, *args).returncode == 0
    write(workspace / "db/more/stars.json", '{"databaseChangeLog": [{"changeSet": {"id": "stars", "author": "tycho", '
          '"changes": [{"sql": {"sql": "CREATE TABLE star (name text)"}}]}}]}')
    main = workspace / "db/main.xml"
    main.write_text(main.read_text().replace("</databaseChangeLog>",
                                             '    <include file="more/stars.json"/>\n</databaseChangeLog>'))
    plan = plan_lb(sq, workspace, *args)
    assert [row["cached"] for row in plan] == [True, True, True, True, False], plan
    assert plan[-1]["source"] == "more/stars.json::stars::tycho"
    result = prepare_lb(sq, workspace, *args)
    assert result.returncode == 0, result.stderr
    assert len(builds(result.stderr)) == 1 and "stars" in builds(result.stderr)[0], result.stderr
    assert psql(result.stdout.strip(), "SELECT count(*) FROM databasechangelog") == "4"


XSD = ('xmlns="http://www.liquibase.org/xml/ns/dbchangelog" '
       'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
       'xsi:schemaLocation="http://www.liquibase.org/xml/ns/dbchangelog '
       'http://www.liquibase.org/xml/ns/dbchangelog/dbchangelog-4.20.xsd"')


def test_plan_order_is_liquibase_order_for_nested_include_all(sqlrs_native: Sqlrs, workspace: Path) -> None:
    """includeAll with subfolders, raw SQL, YAML, JSON and XML, an include inside an includeAll
    file: sqlrs's plan (read without a JVM) lists the changesets in the order one plain
    `liquibase update` executes them."""
    files = {
        "root.yaml": "databaseChangeLog:\n  - changeSet: {id: first, author: o, changes: [{sql: {sql: select 1}}]}\n"
                     "  - includeAll: {path: steps/, relativeToChangelogFile: true}\n"
                     "  - changeSet: {id: last, author: o, changes: [{sql: {sql: select 1}}]}\n",
        "steps/b/01-nested.sql": "--liquibase formatted sql\n--changeset n:nested-1\nselect 1;\n"
                                 "--changeset n:nested-2\nselect 2;\n",
        "steps/a-raw.sql": "select 'raw';\n",
        "steps/B-upper.json": '{"databaseChangeLog": [{"changeSet": {"id": "upper", "author": "j", '
                              '"changes": [{"sql": {"sql": "select 1"}}]}}]}',
        "steps/c.xml": f'<?xml version="1.0"?>\n<databaseChangeLog {XSD}>\n'
                       '  <changeSet id="c-1" author="x"><sql>select 1</sql></changeSet>\n'
                       '  <include file="../extra/e.xml" relativeToChangelogFile="true"/>\n'
                       '  <changeSet id="c-2" author="x"><sql>select 2</sql></changeSet>\n</databaseChangeLog>\n',
        "extra/e.xml": f'<?xml version="1.0"?>\n<databaseChangeLog {XSD}>\n'
                       '  <changeSet id="e-1" author="x"><sql>select 1</sql></changeSet>\n</databaseChangeLog>\n',
        "steps/notes.txt": "not a changelog\n",
    }
    for path, text in files.items():
        write(workspace / path, text)
    args = ("update", "--changelog-file=root.yaml")
    plan = plan_lb(sqlrs_native, workspace, *args)
    empty = sqlrs_native.prepare("-c", "SELECT 1")
    plain_update(empty, workspace, *args)
    ran = [line.split("|") for line in database(empty)["changelog"].splitlines()]
    assert [row["source"] for row in plan[1:]] == [f"{r[2]}::{r[0]}::{r[1]}" for r in ran]
    assert len(ran) == 9


def test_python_api(sqlrs_native: Sqlrs, workspace: Path) -> None:
    import sqlrs

    sq = sqlrs_native
    for path, text in SMALL.items():
        write(workspace / path, text)
    client = sqlrs.Client(sq.state_dir, runtime="native", base_dir=workspace)
    update = "update --changelog-file=main.xml --search-path=db"
    rows = client.plan(liquibase=update)
    assert [row["source"] for row in rows[1:]] == [
        "main.xml::planet::kepler", "more/moons.yaml::load-planets::kepler", "more/rings.sql::rings::galileo"]
    state = client.build(liquibase=update.split())
    assert state.id == plan_lb(sq, workspace, *update.split())[-1]["state_id"]
    with client.instance(state=state) as db, db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM planet WHERE ringed").fetchone() == (1,)
    with client.instance(liquibase=update) as db, db.connect() as conn:  # cached: no Liquibase runs
        assert conn.execute("SELECT count(*) FROM databasechangelog").fetchone() == (3,)
    with pytest.raises(sqlrs.UsageError, match="one input kind"):
        client.build(["x.sql"], liquibase=update)
    with pytest.raises(sqlrs.UsageError, match="refused"):
        client.plan(liquibase=update + " --url=jdbc:postgresql://elsewhere/db")
