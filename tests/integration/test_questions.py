"""Questions only cached states answer cheaply (issue 25): `sqlrs compare`, `check:alembic
--downgrades`, `bisect:psql`, on native and one container runtime (`check:django --backwards`:
test_questions_django.py).

Real PostgreSQL, real Alembic (the test's Python, as the CLI's), synthetic migrations written by
the tests, examples/alembic-shop (copied, so a test may break a downgrade). The module's tests
share one state directory per runtime; each removes what it made, and the fixture fails on any
instance or process left behind.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, Sqlrs, psql, write

import sqlrs

pytestmark = pytest.mark.timeout(900)
SQLRS_RUNTIMES = ("native", "docker")  # the questions meet the runtime only through instances

EXAMPLE = REPO / "examples" / "alembic-shop"

# a small history: each step does something a reader can name
MIGRATIONS = {
    "001_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);\n"
                     "INSERT INTO users (name) VALUES ('ada'), ('alan');\n",
    "002_email.sql": "ALTER TABLE users ADD COLUMN email varchar(200);\n"
                     "CREATE UNIQUE INDEX users_email ON users (email);\n",
    "003_posts.sql": "CREATE TYPE mood AS ENUM ('happy', 'sad');\n"
                     "CREATE TABLE posts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
                     "  author int NOT NULL REFERENCES users ON DELETE CASCADE, body text, feeling mood);\n",
    "004_counts.sql": "CREATE FUNCTION post_count(u int) RETURNS bigint LANGUAGE sql\n"
                      "  AS $$ SELECT count(*) FROM posts WHERE author = u $$;\n"
                      "CREATE VIEW user_posts AS SELECT u.name, post_count(u.id) AS posts FROM users u;\n",
    "005_widen.sql": "ALTER TABLE users ALTER COLUMN email TYPE varchar(320);\n"
                      "ALTER TABLE users ADD CONSTRAINT users_name_check CHECK (name <> '');\n"
                      "UPDATE users SET email = name || '@example.com';\n",
}


def migrations(workspace: Path) -> list[str]:
    for name, text in MIGRATIONS.items():
        write(workspace / "db" / name, text)
    return [arg for name in MIGRATIONS for arg in ("-f", f"db/{name}")]


def kept_states(sq: Sqlrs, args: list[str] | tuple[str, ...], cwd: Path) -> list[str]:
    """The state ids of a chain's base and steps, each kept as a state of its own (a build keeps
    its last step; the states between are kept only where that pays, SPEC 5)."""
    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=cwd)
    for end in range(2, len(args) + 1, 2):
        client.build(psql_args=list(args[:end]))
    return [row["state_id"] for row in client.plan(psql_args=list(args))]


def compare(sq: Sqlrs, a: str, b: str, *args: str, code: int) -> dict[str, Any]:
    result = sq.run("compare", a, b, *args, "-o", "json")
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def user_instances(sq: Sqlrs) -> list[str]:
    return sorted(instance["id"] for instance in sq.instances())


# -- compare -------------------------------------------------------------------------------------------
def test_each_step_compares_as_what_it_does(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    args = migrations(workspace)
    dsn = sq.prepare(*args, cwd=workspace)
    ids = kept_states(sq, args, workspace)
    mine = user_instances(sq)

    first = compare(sq, ids[0], ids[1], code=1)
    assert first["schema"] == {"added": [
        "table public.users (id integer NOT NULL DEFAULT nextval('public.users_id_seq'::regclass), name text NOT NULL)",
        "constraint users_pkey on public.users PRIMARY KEY (id)"], "removed": [], "changed": []}
    assert first["tables"] == [{"name": "public.users", "rows_a": None, "rows_b": 2, "data_changed": True}]
    assert (first["a"]["kind"], first["a"]["id"], first["b"]["id"]) == ("state", ids[0], ids[1])

    email = compare(sq, ids[1], ids[2], code=1)
    assert email["schema"]["added"] == ["column public.users.email character varying(200)",
                                        "unique index public.users_email ON public.users USING btree (email)"]
    assert not any(table["data_changed"] for table in email["tables"])  # the column is new, the rows are not

    posts = compare(sq, ids[2], ids[3], code=1)["schema"]
    assert posts["added"] == [
        "type public.mood AS ENUM ('happy', 'sad')",
        "table public.posts (id bigint GENERATED ALWAYS AS IDENTITY NOT NULL, author integer NOT NULL, "
        "body text, feeling public.mood)",
        "constraint posts_author_fkey on public.posts FOREIGN KEY (author) REFERENCES public.users(id) "
        "ON DELETE CASCADE",
        "constraint posts_pkey on public.posts PRIMARY KEY (id)"]

    counts = compare(sq, ids[3], ids[4], "--data", "none", code=1)
    assert counts["schema"]["added"] == ["view public.user_posts (name, posts)",
                                         "function public.post_count(u integer) RETURNS bigint LANGUAGE sql"]
    assert counts["tables"] == [] and counts["data"] == "none"

    rename = compare(sq, ids[4], ids[5], code=1)
    assert rename["schema"]["changed"] == [
        "column public.users.email: character varying(200) → character varying(320)"]
    assert rename["schema"]["added"] == ["constraint users_name_check on public.users CHECK ((name <> ''::text))"]
    assert [t["name"] for t in rename["tables"] if t["data_changed"]] == ["public.users"]

    # the text form: the same differences, one a line, and exit 1
    text = sq.run("compare", ids[1], ids[2])
    assert text.returncode == 1
    assert text.stdout.splitlines() == [
        "schema: 2 added", "  + column public.users.email character varying(200)",
        "  + unique index public.users_email ON public.users USING btree (email)", "different"]
    # the instances made to read states are gone; the user's is still there, untouched
    assert user_instances(sq) == mine
    assert psql(dsn, "SELECT count(*) FROM users") == "2"
    assert sq.run("rm", mine[0]).returncode == 0


def test_the_same_files_by_another_chain_compare_equal(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    args = migrations(workspace)
    autocommit = sq.plan(*args, cwd=workspace)[-1]["state_id"]
    single = sq.plan("-1", *args, cwd=workspace)[-1]["state_id"]
    merged = write(workspace / "all.sql", "".join(MIGRATIONS.values()))
    for chain in (args, ("-1", *args), ("-f", str(merged.relative_to(workspace)))):
        sq.prepare(*chain, cwd=workspace)
    one_file = sq.plan("-f", "all.sql", cwd=workspace)[-1]["state_id"]
    assert len({autocommit, single, one_file}) == 3  # three different states...
    for other in (single, one_file):
        same = compare(sq, autocommit, other, code=0)  # ...holding the same database
        assert same["equal"] is True and same["schema"] == {"added": [], "removed": [], "changed": []}
        assert {t["name"]: t["rows_a"] for t in same["tables"]} == {"public.posts": 0, "public.users": 2}
    assert sq.run("compare", autocommit, single).stdout.splitlines() == [
        "equal: the schema and the data of 2 tables (2 rows)"]
    for instance in user_instances(sq):
        assert sq.run("rm", instance).returncode == 0


def test_a_changed_row_is_data_changed(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    args = migrations(workspace)
    dsn = sq.prepare(*args, name="edited", cwd=workspace)
    state = sq.plan(*args, cwd=workspace)[-1]["state_id"]
    assert compare(sq, state, "edited", code=0)["equal"] is True
    psql(dsn, "UPDATE users SET name = 'grace' WHERE name = 'ada'")
    changed = compare(sq, state, "edited", code=1)
    assert changed["schema"] == {"added": [], "removed": [], "changed": []}
    assert [t for t in changed["tables"] if t["data_changed"]] == [
        {"name": "public.users", "rows_a": 2, "rows_b": 2, "data_changed": True}]
    assert changed["b"]["kind"] == "instance" and changed["b"]["name"] == "edited"
    assert compare(sq, state, "edited", "--data", "rows", code=0)["equal"] is True  # same counts
    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image)
    assert client.compare(state, client.get_instance("edited"))["tables"] == changed["tables"]
    psql(dsn, "INSERT INTO users (name) VALUES ('edsger')")
    grown = compare(sq, state, "edited", code=1)
    assert [(t["rows_a"], t["rows_b"]) for t in grown["tables"] if t["data_changed"]] == [(2, 3)]
    assert grown["sequences"] == [{"name": "public.users_id_seq", "value_a": 2, "value_b": 3}]
    assert compare(sq, state, "edited", "--ignore", "users", code=0)["tables"] == [
        {"name": "public.posts", "rows_a": 0, "rows_b": 0, "data_changed": False}]
    # bad references: not found (4), and nothing made for them
    missing = sq.run("compare", state, "nosuchname")
    assert missing.returncode == 4 and "no state, instance or name matches 'nosuchname'" in missing.stderr
    assert sq.run("rm", "edited").returncode == 0
    assert sq.instances() == []


RICH = """CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('happy', 'sad');
CREATE DOMAIN app.positive AS integer NOT NULL CHECK (VALUE > 0);
CREATE TYPE app.pair AS (a integer, b text);
CREATE TYPE app.span AS RANGE (subtype = integer);
CREATE SEQUENCE app.tickets START 100 INCREMENT 5;
CREATE TABLE app.events (id bigint GENERATED BY DEFAULT AS IDENTITY, PRIMARY KEY (id, day),
  at timestamptz NOT NULL DEFAULT now(), kind text COLLATE "C",
  total numeric(10,2) GENERATED ALWAYS AS (1.5) STORED, day date NOT NULL)
  PARTITION BY RANGE (day);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX events_kind ON app.events (kind);
CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v jsonb) WITH (fillfactor = 70);
ALTER TABLE app.cache ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON app.cache FOR SELECT TO PUBLIC USING (k <> '');
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER touch BEFORE UPDATE ON app.cache FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE PROCEDURE app.noop() LANGUAGE sql AS $$ SELECT 1 $$;
CREATE AGGREGATE app.total(integer) (SFUNC = int4pl, STYPE = integer, INITCOND = '0');
CREATE MATERIALIZED VIEW app.kinds AS SELECT DISTINCT kind FROM app.events;
CREATE RULE no_delete AS ON DELETE TO app.cache DO INSTEAD NOTHING;
INSERT INTO app.events (kind, day) VALUES ('a', '2024-03-01'), ('b', '2024-04-01');
"""

CHANGES = """ALTER TYPE app.mood ADD VALUE 'meh';
ALTER DOMAIN app.positive DROP NOT NULL;
ALTER SEQUENCE app.tickets INCREMENT 10;
ALTER TABLE app.events ALTER COLUMN kind SET DEFAULT 'x';
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
ALTER TABLE app.cache DISABLE ROW LEVEL SECURITY;
ALTER TABLE app.cache DISABLE TRIGGER touch;
DROP POLICY own ON app.cache;
CREATE OR REPLACE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.v = '{}'; RETURN NEW; END $$;
DROP RULE no_delete ON app.cache;
CREATE RULE no_delete AS ON DELETE TO app.cache DO INSTEAD SELECT 1;
DROP INDEX app.events_kind;
CREATE INDEX events_kind ON app.events (kind, day);
REFRESH MATERIALIZED VIEW app.kinds;
"""


def test_every_kind_of_object_is_described_and_its_changes_seen(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    write(workspace / "rich.sql", RICH)
    write(workspace / "changes.sql", CHANGES)
    args = ("-f", "rich.sql", "-f", "changes.sql")
    base, rich, changed = kept_states(sq, args, workspace)
    made = compare(sq, base, rich, code=1)
    assert made["schema"]["removed"] == [] and made["schema"]["changed"] == []
    assert made["schema"]["added"] == [
        "schema app",
        "type app.mood AS ENUM ('happy', 'sad')",
        "type app.pair AS (a integer, b text)",
        "type app.span AS RANGE (SUBTYPE = integer)",
        "domain app.positive AS integer NOT NULL CONSTRAINT positive_check CHECK ((VALUE > 0))",
        "table app.cache (k text NOT NULL, v jsonb) UNLOGGED WITH (fillfactor=70) ROW LEVEL SECURITY",
        "table app.events (id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL, at timestamp with time zone NOT NULL "
        "DEFAULT now(), kind text COLLATE pg_catalog.\"C\", total numeric(10,2) GENERATED ALWAYS AS (1.5) STORED, "
        "day date NOT NULL) PARTITION BY RANGE (day)",
        "table app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "materialized view app.kinds (kind)",
        "sequence app.tickets AS bigint INCREMENT 5 MINVALUE 1 MAXVALUE 9223372036854775807 START 100 CACHE 1",
        "constraint cache_pkey on app.cache PRIMARY KEY (k)",
        "constraint events_pkey on app.events PRIMARY KEY (id, day)",
        "index app.events_kind ON ONLY app.events USING btree (kind)",
        "trigger touch on app.cache BEFORE UPDATE FOR EACH ROW EXECUTE FUNCTION app.touch()",
        "rule no_delete on app.cache",
        "policy own on app.cache AS PERMISSIVE FOR SELECT TO public USING ((k <> ''::text))",
        "function app.touch() RETURNS trigger LANGUAGE plpgsql",
        "procedure app.noop() LANGUAGE sql",
        "aggregate app.total(integer) (SFUNC = int4pl, STYPE = integer, INITCOND = '0')"]
    assert {t["name"]: t["rows_b"] for t in made["tables"]} == {"app.cache": 0, "app.events_2024": 2, "app.kinds": 0}
    diff = compare(sq, rich, changed, code=1)
    assert diff["schema"]["added"] == [
        "table app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"]
    assert diff["schema"]["removed"] == [
        "policy own on app.cache AS PERMISSIVE FOR SELECT TO public USING ((k <> ''::text))"]
    assert diff["schema"]["changed"] == [
        "type app.mood: AS ENUM ('happy', 'sad') → AS ENUM ('happy', 'sad', 'meh')",
        "domain app.positive: AS integer NOT NULL CONSTRAINT positive_check CHECK ((VALUE > 0)) → AS integer "
        "CONSTRAINT positive_check CHECK ((VALUE > 0))",
        "table app.cache: UNLOGGED WITH (fillfactor=70) ROW LEVEL SECURITY → UNLOGGED WITH (fillfactor=70)",
        "sequence app.tickets: AS bigint INCREMENT 5 MINVALUE 1 MAXVALUE 9223372036854775807 START 100 CACHE 1 → "
        "AS bigint INCREMENT 10 MINVALUE 1 MAXVALUE 9223372036854775807 START 100 CACHE 1",
        "column app.events.kind: text COLLATE pg_catalog.\"C\" → text COLLATE pg_catalog.\"C\" DEFAULT 'x'::text",
        "index app.events_kind: ON ONLY app.events USING btree (kind) → ON ONLY app.events USING btree (kind, day)",
        "trigger touch on app.cache: BEFORE UPDATE FOR EACH ROW EXECUTE FUNCTION app.touch() → BEFORE UPDATE FOR "
        "EACH ROW EXECUTE FUNCTION app.touch() (disabled)",
        "rule no_delete on app.cache: definition changed",
        "function app.touch(): definition changed"]
    assert [t["name"] for t in diff["tables"] if t["data_changed"]] == ["app.kinds"]  # refreshed
    for instance in user_instances(sq):
        assert sq.run("rm", instance).returncode == 0


# -- check:alembic --downgrades ---------------------------------------------------------------------
def project(workspace: Path) -> Path:
    target = workspace / "shop"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return target


def test_every_downgrade_of_the_example_restores(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    result = sq.run("check:alembic", "--downgrades", *sq.runtime_flags(), cwd=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0001 (on base): restores" and len(lines) == 7
    assert all(line.endswith(": restores") for line in lines)
    assert "every downgrade restores" in result.stderr
    assert sq.instances() == []


def test_a_downgrade_that_does_not_restore_is_named(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    root = project(workspace)
    revision = root / "alembic" / "versions" / "0006_customer_email.py"
    text = revision.read_text()
    # the index is dropped, the column is not
    revision.write_text(text.replace('    op.drop_column("customers", "email")\n', "    pass\n"))
    result = sq.run("check:alembic", "--downgrades", *sq.runtime_flags(), "-o", "json", cwd=root)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    failed = [r for r in report["revisions"] if not r["restores"]]
    assert report["restores"] is False and len(report["revisions"]) == 7
    assert failed == [{"revision": "0006", "parent": "0004", "restores": False,
                       "differences": ["left behind: column public.customers.email character varying(200)"]}]
    # the same from a test, through the pytest plugin's helper (tests/test_downgrades.py of the example)
    options = ["--sqlrs-runtime", sq.runtime] + (["--sqlrs-image", sq.image] if sq.image else [])
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options,
                            "tests/test_downgrades.py"], cwd=root, env=sq.env, capture_output=True, text=True,
                           timeout=800, check=False)
    assert suite.returncode == 1, suite.stdout[-3000:]
    assert "AssertionError: downgrades that do not restore their parent's state: 0006" in suite.stdout
    assert "0006 (on 0004): does not restore: left behind: column public.customers.email" in suite.stdout
    # a data migration whose downgrade leaves rows behind: caught by the row counts (the default)
    seed = root / "alembic" / "versions" / "0004_seed_catalogue.py"
    seed.write_text(seed.read_text().replace('    op.execute("DELETE FROM products")\n', ""))
    text_run = sq.run("check:alembic", "--downgrades", *sq.runtime_flags(), "--to", "0004", cwd=root)
    assert text_run.returncode == 1
    assert text_run.stdout.splitlines()[-1] == (
        "0004 (on 0003): does not restore: data: public.products: 0 → 3 rows")
    assert sq.instances() == []


# -- bisect:psql ---------------------------------------------------------------------------------------
STEPS = 40
BREAKS_AT = 27  # the step after which the check fails


def history(workspace: Path) -> list[str]:
    args: list[str] = []
    write(workspace / "h" / "000.sql", "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);\n")
    for step in range(1, STEPS + 1):
        sql = f"INSERT INTO accounts VALUES ({step}, {step * 10});\n"
        if step == BREAKS_AT:
            sql += "UPDATE accounts SET balance = -1 WHERE id = 3;\n"
        write(workspace / "h" / f"{step:03}.sql", sql)
    args = ["-f", "h/000.sql"] + [arg for step in range(1, STEPS + 1) for arg in ("-f", f"h/{step:03}.sql")]
    return args


def test_bisect_finds_the_step_that_breaks_a_check(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    args = history(workspace)
    steps = len(args) // 2
    write(workspace / "check.sql", "SELECT 1 / (count(*) = 0)::int FROM accounts WHERE balance < 0;\n")
    result = sq.run("bisect:psql", "--check", "check.sql", *sq.runtime_flags(), "-o", "json", "--", *args,
                    cwd=workspace)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    plan = sq.plan(*args, cwd=workspace)
    assert found["verdict"] == "found" and found["steps"] == steps
    assert {k: found["first_bad"][k] for k in ("index", "source", "state_id")} == {
        "index": BREAKS_AT + 1, "source": f"h/{BREAKS_AT:03}.sql", "state_id": plan[BREAKS_AT + 1]["state_id"]}
    assert "division by zero" in found["first_bad"]["error"]
    assert found["tested"] <= math.ceil(math.log2(steps)) + 2
    # probes build only up to what they test: nothing past the last failing probe was built
    built = {s["id"] for s in sq.states()}
    highest = max(p["index"] for p in found["probes"])
    assert plan[highest]["state_id"] in built
    assert not any(row["state_id"] in built for row in plan[highest + 1:])
    assert "checking state" in result.stderr

    client = sqlrs.Client(sq.state_dir, runtime=sq.runtime, image=sq.image, base_dir=workspace)
    again = client.bisect("check.sql", psql_args=args)
    assert again["first_bad"] == found["first_bad"] and again["probes"] == found["probes"]
    text = sq.run("bisect:psql", "--check", "check.sql", *sq.runtime_flags(), "--", *args, cwd=workspace)
    assert text.returncode == 0
    assert text.stdout.splitlines()[0] == f"first bad step: {BREAKS_AT + 1} h/{BREAKS_AT:03}.sql " \
                                          f"(state {plan[BREAKS_AT + 1]['state_id'][:12]})"
    assert sq.instances() == []


def test_bisect_says_when_no_step_is_to_blame(sqlrs_runtime: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_runtime
    args = history(workspace)[:12]
    write(workspace / "passes.sql", "SELECT count(*) FROM accounts;\n")
    write(workspace / "fails.sql", "SELECT * FROM no_such_table;\n")
    passes = sq.run("bisect:psql", "--check", "passes.sql", *sq.runtime_flags(), "-o", "json", "--", *args,
                    cwd=workspace)
    assert passes.returncode == 1, passes.stderr
    assert json.loads(passes.stdout)["verdict"] == "passes_on_last"
    assert json.loads(passes.stdout)["first_bad"] is None
    fails = sq.run("bisect:psql", "--check", "fails.sql", *sq.runtime_flags(), "--", *args, cwd=workspace)
    assert fails.returncode == 1
    assert fails.stdout.startswith("the check fails on the base already")
    assert 'relation "no_such_table" does not exist' in fails.stdout
    usage = sq.run("bisect:psql", "--check", "missing.sql", *sq.runtime_flags(), "--", *args, cwd=workspace)
    assert usage.returncode == 2 and "missing.sql" in usage.stderr
    assert sq.instances() == []
