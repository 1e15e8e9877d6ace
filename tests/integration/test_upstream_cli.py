"""What the upstream sqlrs (kimak-irmagi/taidon) has, on this sqlrs, through the real CLI on the
native runtime: aliases (and composites mixing alias and raw stages), the workspace
configuration, `--ref`, `diff`, `cache explain`, `--provenance-path`, `--timeout`, the bootstrap
superuser scripts like sakiladb's need, the upstream's Liquibase spelling, and a PostgreSQL
major per request. Self-contained: the upstream's own scenarios run in bench/upstream_scenarios.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Sqlrs, ok, psql, write

pytestmark = pytest.mark.timeout(900)

SCHEMA = "CREATE TABLE album (id int PRIMARY KEY, title text);\n\\ir data/albums.sql\n"
ALBUMS = "INSERT INTO album VALUES (1, 'one'), (2, 'two');\n"
# the shape of sakiladb/postgres's setup and user scripts, run by the upstream's sakila wrapper
ROLE_DANCE = """CREATE ROLE app;
CREATE USER postgres WITH PASSWORD 'p_ssW0rd' CREATEDB;
CREATE TABLE film (id int);
ALTER TABLE film OWNER TO postgres;
INSERT INTO film VALUES (1);
REASSIGN OWNED BY postgres TO app;
DROP OWNED BY postgres;
DROP USER IF EXISTS postgres;
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True,
                          text=True, check=True)
    return done.stdout


def project(root: Path) -> Path:
    """An upstream-style workspace: an alias beside its directory, a run alias, a query."""
    write(root / "examples" / "chinook" / "prepare.sql", SCHEMA)
    write(root / "examples" / "chinook" / "data" / "albums.sql", ALBUMS)
    write(root / "examples" / "chinook.prep.s9s.yaml", "kind: psql\nimage: postgres:17\nargs:\n  - -f\n"
                                                       "  - chinook/prepare.sql\n")
    write(root / "examples" / "count.sql", "select count(*) from album;\n")
    write(root / "examples" / "smoke.run.s9s.yaml", "kind: psql\nargs: [-At, -f, count.sql]\n")
    return root / "examples"


def test_aliases_end_to_end(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    examples = project(workspace)
    listed = json.loads(ok(sq.run("alias", "ls", "-o", "json", cwd=examples)))
    assert [(a["type"], a["ref"], a["file"], a["kind"]) for a in listed] == [
        ("prepare", "chinook", "examples/chinook.prep.s9s.yaml", "psql"),
        ("run", "smoke", "examples/smoke.run.s9s.yaml", "psql")]
    report = json.loads(ok(sq.run("alias", "check", "-o", "json", cwd=workspace)))
    assert (report["checked"], report["valid"], report["invalid"]) == (2, 2, 0)

    plan = json.loads(ok(sq.run("plan", "--runtime", "native", "-o", "json", "chinook", cwd=examples)))
    assert [(row["kind"], row["source"]) for row in plan] == [("base", "initdb"), ("file", "chinook/prepare.sql")]
    # the upstream's composite: an alias prepare and a raw run, from another directory with --workspace
    composite = sq.run("--timeout", "15m", "--workspace", str(workspace), "prepare", "--runtime", "native",
                       "chinook", "run:psql", "--", "-At", "-c", "select title from album order by id", cwd=examples)
    assert ok(composite).splitlines() == ["one", "two"]
    # a raw prepare and an alias run; an alias prepare and an alias run
    raw = sq.run("prepare:psql", "--runtime", "native", "--", "-f", "chinook/prepare.sql", "run", "smoke",
                 cwd=examples)
    assert ok(raw).strip() == "2"
    assert ok(sq.run("prepare", "--runtime", "native", "chinook", "run", "smoke", cwd=examples)).strip() == "2"
    assert sq.instances() == []  # composites remove their instances
    dsn = ok(sq.run("prepare", "--runtime", "native", "--name", "dev", "chinook", cwd=examples)).strip()
    assert psql(dsn, "select count(*) from album") == "2"
    assert ok(sq.run("run", "smoke", "--instance", "dev", cwd=examples)).strip() == "2"
    # the alias' paths are relative to the alias file, whatever the current directory
    assert ok(sq.run("run", "../smoke", "--instance", "dev", cwd=examples / "chinook")).strip() == "2"

    # mistakes: one line, an exit code, nothing else
    missing = sq.run("prepare", "nosuch", cwd=examples)
    assert missing.returncode == 4 and "alias file not found: nosuch.prep.s9s.yaml" in missing.stderr
    outside = sq.run("--workspace", str(examples / "chinook"), "prepare", "../chinook", cwd=examples / "chinook")
    assert outside.returncode == 2 and "outside the workspace" in outside.stderr
    instance = sq.run("prepare", "chinook", "run", "smoke", "--instance", "dev", cwd=examples)
    assert instance.returncode == 2 and "--instance cannot be used" in instance.stderr
    write(examples / "broken.prep.s9s.yaml", "kind: psql\nargs: [-f, nowhere.sql]\n")
    broken = sq.run("alias", "check", "-o", "json", cwd=examples)
    assert broken.returncode == 1 and json.loads(broken.stdout)["invalid"] == 1

    # create writes the upstream's format with paths from the alias file's directory
    created = sq.run("alias", "create", "albums", "prepare:psql", "--image", "postgres:16", "--", "-f",
                     "examples/chinook/data/albums.sql", cwd=workspace)
    assert "created alias file: albums.prep.s9s.yaml" in ok(created)
    assert (workspace / "albums.prep.s9s.yaml").read_text() == (
        "kind: psql\nimage: postgres:16\nargs:\n- -f\n- examples/chinook/data/albums.sql\n")
    again = sq.run("alias", "create", "albums", "prepare:psql", "--", "-f", "examples/count.sql", cwd=workspace)
    assert again.returncode == 1 and "not overwritten" in again.stderr

    # discover suggests an alias for what no alias covers yet
    write(workspace / "db" / "init.sql", "CREATE TABLE t (id int);\n")
    found = json.loads(ok(sq.run("discover", "--aliases", "-o", "json", cwd=workspace)))
    commands = [f["create_command"] for f in found["findings"]]
    assert "sqlrs alias create db prepare:psql -- -f db/init.sql" in commands
    assert not any("chinook/prepare.sql" in c for c in commands)  # covered by chinook.prep.s9s.yaml


def test_ref_diff_explain_and_provenance(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    examples = project(workspace)
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "one")
    write(examples / "chinook" / "data" / "albums.sql", ALBUMS + "INSERT INTO album VALUES (3, 'three');\n")
    write(examples / "chinook" / "data" / "more.sql", "SELECT 1;\n")
    write(examples / "chinook" / "prepare.sql", SCHEMA + "\\ir data/more.sql\n")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "two")

    # diff: the changed files of the include closure, between two commits, both ref modes
    for mode in ("worktree", "blob"):
        report = json.loads(ok(sq.run("diff", "--from-ref", "HEAD~1", "--to-ref", "HEAD", "--ref-mode", mode,
                                      "-o", "json", "plan:psql", "--", "-f", "chinook/prepare.sql", cwd=examples)))
        assert [e["path"] for e in report["modified"]] == ["chinook/data/albums.sql", "chinook/prepare.sql"]
        assert [e["path"] for e in report["added"]] == ["chinook/data/more.sql"] and report["removed"] == []
        assert report["summary"] == {"added": 1, "modified": 2, "removed": 0}
        assert report["scope"]["mode"] == "ref" and len(report["scope"]["to_commit"]) == 40
    human = ok(sq.run("diff", "--from-ref", "HEAD~1", "--to-ref", "HEAD", "prepare", "chinook", cwd=examples))
    assert "Modified: chinook/data/albums.sql" in human and "summary: added=1 modified=2 removed=0" in human
    assert git(workspace, "worktree", "list").count("\n") == 1  # the temporary worktrees are gone

    # --ref prepares the old commit without touching the working tree
    old = ok(sq.run("prepare:psql", "--runtime", "native", "--ref", "HEAD~1", "--", "-f", "chinook/prepare.sql",
                    cwd=examples)).strip()
    assert psql(old, "select count(*) from album") == "2"
    assert (examples / "chinook" / "data" / "more.sql").exists() and not git(workspace, "status", "--short")

    # explain: the include that changed since the cached sibling was built
    report = json.loads(ok(sq.run("cache", "explain", "-o", "json", "prepare:psql", "--runtime", "native", "--",
                                  "-f", "chinook/prepare.sql", cwd=examples)))
    assert report["decision"] == "miss" and [r["cached"] for r in report["steps"]] == [True, False]
    step = report["steps"][1]
    assert step["code"] == "input_changed"
    assert [c["input"] for c in step["changed"]] == ["chinook/prepare.sql", "chinook/data/albums.sql"]
    assert step["added"] == ["chinook/data/more.sql"]
    assert "chinook/data/albums.sql" in ok(sq.run("cache", "explain", "prepare", "--runtime", "native", "chinook",
                                                  cwd=examples))
    hit = json.loads(ok(sq.run("cache", "explain", "-o", "json", "prepare:psql", "--runtime", "native", "--ref",
                               "HEAD~1", "--", "-f", "chinook/prepare.sql", cwd=examples)))
    assert hit["decision"] == "hit"

    # provenance: what the prepare used, its digests and states, no secrets
    record_path = workspace / "artifacts" / "prepare.json"
    dsn = ok(sq.run("prepare", "--runtime", "native", "--provenance-path", str(record_path), "chinook",
                    cwd=examples)).strip()
    record = json.loads(record_path.read_text())
    assert record["format"] == "sqlrs-provenance/1" and record["mode"] == "prepare"
    assert record["alias"] == "examples/chinook.prep.s9s.yaml" and record["result"]["status"] == "succeeded"
    assert [i["input"] for i in record["steps"][1]["inputs"]] == ["chinook/prepare.sql", "chinook/data/albums.sql",
                                                                  "chinook/data/more.sql"]
    assert record["steps"][1]["state_id"] == record["result"]["state_id"]
    assert record["runtime"]["name"] == "native" and record["runtime"]["identity"].startswith("PostgreSQL")
    assert dsn.split("@")[0].split(":")[-1] not in record_path.read_text()  # no password
    failed = workspace / "artifacts" / "failed.json"
    bad = sq.run("prepare:psql", "--runtime", "native", "--provenance-path", str(failed), "--", "-c", "select nope",
                 cwd=examples)
    assert bad.returncode == 1 and json.loads(failed.read_text())["result"]["status"] == "failed"

    # path mode needs no Git
    left, right = workspace / "left", workspace / "right"
    write(left / "s.sql", "select 1;\n")
    write(right / "s.sql", "select 2;\n")
    report = json.loads(ok(sq.run("diff", "--from-path", str(left), "--to-path", str(right), "-o", "json",
                                  "prepare:psql", "--", "-f", "s.sql", cwd=workspace)))
    assert report["modified"] == [{"path": "s.sql", "hash": report["modified"][0]["hash"],
                                   "from_hash": report["modified"][0]["from_hash"]}]


def test_the_bootstrap_superuser_and_the_timeout(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "roles.sql", ROLE_DANCE)
    refused = sq.run("prepare:psql", "--runtime", "native", "--", "-f", "roles.sql", cwd=workspace)
    assert refused.returncode == 1 and 'role "postgres" already exists' in refused.stderr
    write(workspace / ".sqlrs" / "config.yaml", "postgres:\n  superuser: sqlrs\n")
    dsn = ok(sq.run("prepare:psql", "--runtime", "native", "--", "-f", "roles.sql", cwd=workspace)).strip()
    assert psql(dsn, "select tableowner from pg_tables where tablename = 'film'") == "app"
    assert psql(dsn, "select count(*) from pg_roles where rolname = 'postgres'") == "0"
    assert psql(dsn, "select rolname from pg_roles where oid = 10") == "sqlrs"
    bases = {s["id"] for s in sq.states() if s["kind"] == "base"}
    assert len(bases) == 2  # one per bootstrap superuser

    slow = sq.run("--timeout", "3s", "prepare:psql", "--runtime", "native", "--", "-c", "select pg_sleep(60)",
                  cwd=workspace)
    assert slow.returncode == 1 and "timed out after 3s" in slow.stderr
    jobs = sq.json("ls", "--jobs")
    assert jobs[0]["status"] in ("cancelled", "failed")


def test_the_upstream_liquibase_spelling(sqlrs_native: Sqlrs, workspace: Path) -> None:
    from sqlrs.changelogs import liquibase_install as liquibase

    try:
        liquibase.find_launcher(None)
    except Exception as exc:  # the Liquibase suite requires it; here its absence is just a skip
        pytest.skip(f"Liquibase: {exc}")
    sq = sqlrs_native
    write(workspace / "app" / "db" / "master.xml", """<?xml version="1.0" encoding="UTF-8"?>
<databaseChangeLog xmlns="http://www.liquibase.org/xml/ns/dbchangelog"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://www.liquibase.org/xml/ns/dbchangelog
        http://www.liquibase.org/xml/ns/dbchangelog/dbchangelog-4.20.xsd">
    <changeSet id="1" author="t"><sql>CREATE TABLE t (id int)</sql></changeSet>
</databaseChangeLog>
""")
    upstream = json.loads(ok(sq.run("plan:lb", "--runtime", "native", "-o", "json", "--", "update", "--searchPath",
                                    "app", "--changelog-file", "app/db/master.xml", cwd=workspace)))
    liquibase_own = json.loads(ok(sq.run("plan:lb", "--runtime", "native", "-o", "json", "--", "update",
                                         "--search-path=app", "--changelog-file=db/master.xml", cwd=workspace)))
    assert upstream == liquibase_own and upstream[1]["source"] == "db/master.xml::1::t"


def test_a_postgres_major_per_request_on_one_engine(sqlrs_native: Sqlrs, workspace: Path) -> None:
    from sqlrs.adapters.native import NativeRuntime

    sq = sqlrs_native
    default = ok(sq.run("prepare:psql", "--runtime", "native", "--", "-c", "select 1", cwd=workspace)).strip()
    major = int(psql(default, "show server_version_num")) // 10000
    other = next((m for m in ("16", "18", "15", "17") if int(m) != major and _has(NativeRuntime, m)), None)
    if other is None:
        pytest.skip("only one PostgreSQL major on this machine")
    write(workspace / "pyproject.toml", f"[tool.sqlrs]\npostgres.version = {other}\n")
    dsn = ok(sq.run("prepare:psql", "--runtime", "native", "--", "-c", "select 1", cwd=workspace)).strip()
    assert int(psql(dsn, "show server_version_num")) // 10000 == int(other)
    pid = sq.engine_pid()
    env = ok(sq.run("prepare:psql", "--runtime", "native", "--", "-c", "select 1", cwd=workspace,
                    env={"SQLRS_POSTGRES_VERSION": str(major)})).strip()
    assert int(psql(env, "show server_version_num")) // 10000 == major  # the run's choice beats the project's
    assert sq.engine_pid() == pid
    assert len({s["id"] for s in sq.states() if s["kind"] == "base"}) == 2
    missing = sq.run("prepare:psql", "--runtime", "native", "--", "-c", "select 1", cwd=workspace,
                     env={"SQLRS_POSTGRES_VERSION": "11"})
    assert missing.returncode != 0 and "PostgreSQL 11 is not installed here" in missing.stderr
    assert "apt install postgresql-11" in missing.stderr


def test_two_suites_on_two_majors_share_one_engine(sqlrs_native: Sqlrs) -> None:
    """examples/postgres-versions: a suite with sqlrs_postgres_version = 16 next to one on the
    engine's default, run against one state directory."""
    from sqlrs.adapters.native import NativeRuntime

    if not _has(NativeRuntime, "16"):
        pytest.skip("no PostgreSQL 16 here (system or embedded)")
    sq = sqlrs_native
    example = REPO / "examples" / "postgres-versions"
    seen = {}
    for suite in ("pg16", "system"):
        done = subprocess.run([sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider"],
                              cwd=example / suite, env={**sq.env, "EXPECT_MAJOR": "16" if suite == "pg16" else ""},
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        seen[suite] = next(line for line in done.stdout.splitlines() if line.startswith(f"{suite}: PostgreSQL"))
        if suite == "pg16":
            pid = sq.engine_pid()
    default = NativeRuntime(pg_bin=None, user="postgres", binaries_cache=Path("/tmp/sqlrs-test-pg")).resolve(None)
    assert seen["pg16"].startswith("pg16: PostgreSQL 16.")
    assert seen["system"].startswith(f"system: PostgreSQL {default.version.split()[1]}")
    assert sq.engine_pid() == pid


def _has(runtime: type, major: str) -> bool:
    from pathlib import Path as P

    from sqlrs.domain.errors import RuntimeUnavailable

    try:
        runtime(pg_bin=None, user="postgres", binaries_cache=P("/tmp/sqlrs-test-pg")).resolve(None, major)
    except RuntimeUnavailable:
        return False
    return True
