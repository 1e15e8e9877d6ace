"""Nobody gets in: files and sockets private, tokens required, loopback only, passwords per instance."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
from harness import Sqlrs, processes_mentioning, psql, write


def curl_status(info: dict[str, str], path: str, *headers: str) -> str:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", info["socket"]]
    for header in headers:
        args += ["-H", header]
    return subprocess.run([*args, f"http://engine{path}"], capture_output=True, text=True, timeout=30).stdout


def test_engine_files_and_tokens(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    assert sq.run("engine", "start").returncode == 0
    info = json.loads((sq.state_dir / "engine.json").read_text())
    assert stat.S_IMODE(os.stat(sq.state_dir / "engine.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(info["socket"]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sq.state_dir / "metadata.db").st_mode) == 0o600
    assert curl_status(info, "/v1/health") == "200"
    for path in ("/v1/states", "/v1/instances", "/v1/config", "/v1/status", "/v1/prepare-jobs"):
        assert curl_status(info, path) == "401"
        assert curl_status(info, path, "Authorization: Bearer wrong") == "401"
        assert curl_status(info, path, f"Authorization: Basic {info['token']}") == "401"
        assert curl_status(info, path, f"Authorization: Bearer {info['token']}") == "200"


def test_engine_refuses_non_loopback_binds(sqlrs_native: Sqlrs) -> None:
    sq = sqlrs_native
    refused = sq.run("ls", env={"SQLRS_ENGINE_BIND": "0.0.0.0:0"})
    assert refused.returncode == 2  # a bad setting, not an engine that failed (docs/cli.md)
    assert "non-loopback" in refused.stderr and "Traceback" not in refused.stderr
    assert not [cmd for _, cmd in processes_mentioning(str(sq.state_dir)) if "sqlrs.entrypoints.engine" in cmd]
    tcp = sq.run("engine", "start", env={"SQLRS_ENGINE_BIND": "127.0.0.1:0"})
    assert tcp.returncode == 0, tcp.stderr
    assert re.match(r"http://127\.0\.0\.1:\d+", tcp.stdout.strip())
    assert sq.run("ls").returncode == 0


def _other_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_instances_listen_on_loopback_with_their_own_passwords(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    first = sq.prepare("-f", "a.sql", cwd=workspace)
    second = sq.prepare("-f", "a.sql", cwd=workspace)
    a = psycopg.conninfo.conninfo_to_dict(first)
    b = psycopg.conninfo.conninfo_to_dict(second)
    assert a["host"] == b["host"] == "127.0.0.1" and a["password"] != b["password"]
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{a['port']}"], capture_output=True, text=True).stdout
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines() if line.strip()}
    assert addresses == {"127.0.0.1"}, listening
    other = _other_address()
    if other is not None:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=other, port=a["port"], user="sqlrs", password=a["password"], dbname="postgres",
                            connect_timeout=3)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=b["port"], user="sqlrs", password=a["password"], dbname="postgres")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=b["port"], user="postgres", password="", dbname="postgres")
    assert psql(second, "SELECT current_user") == "sqlrs"


def test_passwords_stay_out_of_logs(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "CREATE TABLE a (x int);\n")
    dsn = sq.prepare("-f", "a.sql", name="secret", cwd=workspace)
    password = psycopg.conninfo.conninfo_to_dict(dsn)["password"]
    sq.run("run:psql", "--instance", "secret", "--", "-c", "SELECT 1")
    sq.run("ls")
    logs = [sq.state_dir / "engine.log", *sq.state_dir.glob("run/*/postgres.log")]
    assert len(logs) >= 2
    for log in logs:
        assert password not in log.read_text(errors="replace"), log


def test_paths_ids_and_names_cannot_escape(sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "a.sql", "\\i ../../etc/hostname\n")
    escaped = sq.run("prepare:psql", "--runtime", "native", "--", "-f", "a.sql", cwd=workspace)
    assert escaped.returncode == 2 and "outside the workspace" in escaped.stderr
    link = workspace / "link.sql"
    link.symlink_to("/etc/hostname")
    via_link = sq.run("prepare:psql", "--runtime", "native", "--", "-f", "link.sql", cwd=workspace)
    assert via_link.returncode == 2 and "outside the workspace" in via_link.stderr
    for ref in ("../../etc/passwd", "..", "a/b", "%2e%2e"):
        result = sq.run("run:psql", "--instance", ref, "--", "-c", "select 1")
        assert result.returncode in (2, 4), (ref, result.stderr)
        assert "Traceback" not in result.stderr
    bad_name = sq.run("prepare:psql", "--runtime", "native", "--name", "../evil", "--", "-c", "select 1",
                      cwd=workspace)
    assert bad_name.returncode == 2 and "invalid name" in bad_name.stderr
    rm = sq.run("rm", "../../etc")
    assert rm.returncode in (0, 2) and "Traceback" not in rm.stderr
    assert Path("/etc/passwd").exists()


def test_connect_to_other_servers_is_refused_and_shell_escapes_are_unprivileged(
        sqlrs_native: Sqlrs, workspace: Path) -> None:
    sq = sqlrs_native
    write(workspace / "away.sql", "\\c postgres sqlrs example.com 5432\n")
    away = sq.run("prepare:psql", "--runtime", "native", "--", "-f", "away.sql", cwd=workspace)
    assert away.returncode == 2 and "leaves the instance" in away.stderr
    conninfo = sq.run("prepare:psql", "--runtime", "native", "--", "-c", "\\connect host=example.com",
                      cwd=workspace)
    assert conninfo.returncode == 2
    write(workspace / "db.sql", "CREATE DATABASE other;\n\\c other\nCREATE TABLE inside (x int);\n")
    dsn = sq.prepare("-f", "db.sql", cwd=workspace)
    assert psql(dsn.rsplit("/", 1)[0] + "/other", "SELECT count(*) FROM inside") == "0"
    shell = sq.run("run:psql", "--instance", sq.instances()[0]["id"], "--", "-c", "\\! id -un")
    expected = "postgres" if os.geteuid() == 0 else subprocess.run(["id", "-un"], capture_output=True,
                                                                   text=True).stdout.strip()
    assert shell.stdout.strip() == expected  # documented: \! runs as the unprivileged server user
