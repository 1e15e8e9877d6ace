"""The hot commands give the same stdout, stderr and exit code on the fast path as through Click
(SQLRS_CLI_NO_FAST=1), and the fast path imports nothing heavy (sqlrs/entrypoints/cli/fast.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from harness import Sqlrs, write

CLICK = {"SQLRS_CLI_NO_FAST": "1"}
FAST = {"SQLRS_CLI_NO_FAST": ""}
HEAVY = ("click", "attrs", "cattrs", "sqlalchemy", "starlette", "docker", "podman", "rich", "psycopg", "typing",
         "subprocess", "threading", "datetime", "uuid", "platform", "inspect", "socket", "selectors")


def normalize(text: str) -> str:
    """What differs between two runs a moment apart: uptime, free space, memory and disk use."""
    text = re.sub(r"up [0-9.]+s", "up Ns", text)
    text = re.sub(r"\([0-9.]+ [KMGT]?i?B free\)", "(N free)", text)
    # the servers' memory and the disk measured moments apart differ by a page or two
    text = re.sub(r"(PSS|RSS|states|instances|databases|disk:) +[0-9.]+ [KMGT]?i?B", r"\1 N", text)
    text = re.sub(r"in [0-9]+ processes", "in N processes", text)
    text = re.sub(r"measured [0-9.]+s ago", "measured Ns ago", text)
    text = re.sub(r'"(pss_bytes|rss_bytes|processes|[a-z]+_bytes|measured_seconds_ago)": [0-9.]+', r'"\1": N', text)
    text = re.sub(r'"(uptime_seconds|free_bytes)": [0-9.]+', r'"\1": N', text)
    return re.sub(r"^ *[0-9]+\.[0-9]s ", "N.Ns ", text, flags=re.M)  # progress lines' timestamps


def both(sq: Sqlrs, *args: str, cwd: Path | None = None, input: str | None = None,
         same: bool = True) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    fast = sq.run(*args, cwd=cwd, input=input, env=FAST)
    slow = sq.run(*args, cwd=cwd, input=input, env=CLICK)
    if same:
        assert (fast.returncode, normalize(fast.stdout), normalize(fast.stderr)) == \
            (slow.returncode, normalize(slow.stdout), normalize(slow.stderr)), args
    return fast, slow


def test_hot_commands_print_the_same_both_ways(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    sq.env["SQLRS_WARM"] = "false"  # warm instances change status and ls between the two runs
    write(workspace / "schema.sql", "CREATE TABLE item (id int);\nINSERT INTO item VALUES (1), (2);\n")
    write(workspace / "report.sql", "SELECT count(*) AS items FROM item;\n")
    flags = sq.runtime_flags()
    # prepare: a first build through Click, then hits both ways
    dsn = sq.run("prepare:psql", *flags, "--name", "dev", "--", "-f", "schema.sql", cwd=workspace, env=CLICK)
    assert dsn.returncode == 0, dsn.stderr
    reused, _ = both(sq, "prepare:psql", *flags, "--name", "dev", "--reuse", "--", "-f", "schema.sql", cwd=workspace)
    assert reused.stdout == dsn.stdout and "plan: 2 states (2 cached, 0 to build)" in reused.stderr
    both(sq, "-q", "prepare:psql", *flags, "--name=dev", "--reuse", "-f", "schema.sql", cwd=workspace)
    fresh_fast, fresh_click = both(sq, "-q", "prepare:psql", *flags, "--", "-f", "schema.sql", cwd=workspace,
                                   same=False)
    for result in (fresh_fast, fresh_click):
        assert result.returncode == 0 and result.stderr == ""
        assert re.fullmatch(r"postgresql://sqlrs:\S+@127\.0\.0\.1:\d+/postgres\n", result.stdout), result.stdout
    # prepare's errors: from the shared argument parser, or Click's own
    missing, _ = both(sq, "prepare:psql", *flags, "--", "-f", "nosuch.sql", cwd=workspace)
    assert missing.returncode == 2 and missing.stderr.startswith("sqlrs: error: nosuch.sql: no such file")
    both(sq, "prepare:psql", "--reuse", "--", "-f", "schema.sql", cwd=workspace)
    both(sq, "prepare:psql", "--ttl", "soon", "--", "-f", "schema.sql", cwd=workspace)
    both(sq, "prepare:psql", "--runtime", "lxc", "--", "-f", "schema.sql", cwd=workspace)
    # run:psql: -c, -f, stdin, a failing statement, an unknown instance, no instance
    ran, _ = both(sq, "run:psql", "--instance", "dev", "--", "-c", "select 40 + 2", cwd=workspace)
    assert ran.returncode == 0 and " 42" in ran.stdout
    both(sq, "run:psql", "--instance=dev", "-X", "-At", "-f", "report.sql", cwd=workspace)
    piped, _ = both(sq, "run:psql", "--instance", "dev", "--", "-At", cwd=workspace, input="select 'piped';\n")
    assert piped.stdout == "piped\n"
    failed, _ = both(sq, "run:psql", "--instance", "dev", "--", "-c", "select nosuch", cwd=workspace)
    assert failed.returncode != 0 and "nosuch" in failed.stderr
    unknown, _ = both(sq, "run:psql", "--instance", "nosuch", "--", "-c", "select 1", cwd=workspace)
    assert unknown.returncode == 4
    both(sq, "run:psql", "--", "-c", "select 1", cwd=workspace)
    # listings and status
    for args in (["ls"], ["ls", "--states"], ["ls", "--names"], ["ls", "--jobs"], ["ls", "-o", "json"],
                 ["ls", "--instances", "--json"], ["-q", "ls", "--names"], ["status"], ["status", "--cache"],
                 ["status", "-o", "json"], ["status", "--json"], ["ls", "--tree"], ["status", "--help"]):
        result, _ = both(sq, *args)
        assert result.returncode == 0, (args, result.stderr)
    # rm: a missing id (hex: looked up as a state too), JSON, an instance by name, usage errors
    missing_rm, _ = both(sq, "rm", "feedc0ffee00")
    assert missing_rm.returncode == 0 and "nothing to remove" in missing_rm.stderr
    both(sq, "rm", "-o", "json", "nosuch")
    both(sq, "rm")
    both(sq, "rm", "--bogus", "x")
    instances = [i for i in sq.instances() if i.get("name") is None]
    assert len(instances) == 2
    removed = [sq.run("rm", i["id"], env=env) for i, env in zip(instances, (FAST, CLICK), strict=True)]
    assert [(r.returncode, r.stdout, r.stderr) for r in removed] == \
        [(0, f"removed instance {i['id']}\n", "") for i in instances]
    assert [i["name"] for i in sq.instances()] == ["dev"]


def test_state_dir_option_and_an_engine_that_is_not_there(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    assert sq.run("engine", "start").returncode == 0
    parent, name = sq.state_dir.parent, sq.state_dir.name
    env = {"SQLRS_STATE_DIR": ""}
    for mode in (FAST, CLICK):
        result = sq.run("--state-dir", name, "ls", "--states", "-o", "json", cwd=parent, env={**env, **mode})
        assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    # an engine address that answers nothing: the same error both ways, no engine spawned
    dead = {"SQLRS_ENGINE_ADDR": f"unix://{workspace}/nothing.sock"}
    for args in (["status"], ["ls"], ["rm", "x"], ["run:psql", "--instance", "x", "-c", "select 1"]):
        fast = sq.run(*args, env={**dead, **FAST}, cwd=workspace)
        slow = sq.run(*args, env={**dead, **CLICK}, cwd=workspace)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
        assert fast.returncode == 3 and fast.stderr.startswith("sqlrs: error: engine at unix://")


def test_the_fast_path_imports_nothing_heavy(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "schema.sql", "CREATE TABLE t (id int);\n")
    sq.prepare("-f", "schema.sql", name="dev", cwd=workspace)
    report = workspace / "modules.json"
    code = ("import atexit, json, sys\n"
            f"atexit.register(lambda: open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
            "sys.argv = ['sqlrs', *sys.argv[1:]]\n"
            "from sqlrs.entrypoints.cli.fast import main\n"
            "main()\n")
    hot = [["status"], ["ls"], ["rm", "feedc0ffee00"], ["run:psql", "--instance", "dev", "--", "-c", "select 1"],
           ["-q", "prepare:psql", "--runtime", "native", "--name", "dev", "--reuse", "--", "-f", "schema.sql"]]
    # the first command to check --runtime's choices in this environment reads the entry points
    # once (sqlrs/extensions.py); what the test asks is what every later command imports
    assert sq.run(*hot[-1], cwd=workspace, env=FAST).returncode == 0
    for args in hot:
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=workspace,
                                env={**sq.env, **FAST}, timeout=300, check=False)
        assert result.returncode == 0, (args, result.stderr)
        modules = json.loads(report.read_text())
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
        assert not heavy, (args, heavy)
        if args[0] in ("status", "ls", "rm", "run:psql"):
            assert not {"pathlib", "urllib", "hashlib"} & set(modules), args  # prepare reads files: pathlib
    # and the same command through Click does import it: the check above can fail
    sq.run("ls", env=CLICK)
    result = subprocess.run([sys.executable, "-c", code, "ls"], capture_output=True, text=True, cwd=workspace,
                            env={**sq.env, **CLICK}, timeout=300, check=False)
    assert result.returncode == 0 and "click" in json.loads(report.read_text())
