from __future__ import annotations

from pathlib import Path

import pytest

from sqlrs.engine_client.errors import ClientError as CliError
from sqlrs.engine_client.psqlargs import Workspace, parse_prepare_args, parse_run_args


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / "a.sql").write_text("select 1;\n\\ir sub/b.sql\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.sql").write_text("select 2;\n")
    return Workspace(cwd=tmp_path, root=tmp_path)


def test_steps_in_order_with_options(ws: Workspace) -> None:
    parsed = parse_prepare_args(["-X", "-f", "a.sql", "-c", "select 3", "--set=x=1", "-vy=2", "-1q"], ws)
    assert [s["kind"] for s in parsed.steps] == ["file", "command"]
    files = parsed.steps[0]["files"]
    assert [f["path"] for f in files] == ["a.sql", "sub/b.sql"]
    assert files[0]["includes"] == [{"line": 1, "file": 1}]
    assert parsed.variables == [("x", "1"), ("y", "2")]
    assert parsed.single_transaction


@pytest.mark.parametrize("args", [["-h", "x"], ["-p5432"], ["--username=u"], ["--dbname", "d"], ["postgres"],
                                  ["-W"], ["-c", "select 1", "host=x"]])
def test_connection_arguments_are_usage_errors(ws: Workspace, args: list[str]) -> None:
    with pytest.raises(CliError) as caught:
        parse_prepare_args(args, ws)
    assert caught.value.exit_code == 2


def test_files_outside_workspace_and_missing(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(CliError, match="outside the workspace"):
        parse_prepare_args(["-f", "/etc/hostname"], ws)
    with pytest.raises(CliError, match="no such file"):
        parse_prepare_args(["-f", "missing.sql"], ws)
    (tmp_path / "loop.sql").write_text("\\i loop.sql\n")
    with pytest.raises(CliError, match="cycle"):
        parse_prepare_args(["-f", "loop.sql"], ws)
    outside = Workspace(cwd=ws.cwd, root=ws.root, allow_outside=True)
    assert parse_prepare_args(["-f", "/etc/hostname"], outside).steps


def test_run_args_pass_through_with_file_tokens(ws: Workspace) -> None:
    parsed = parse_run_args(["-At", "-f", "a.sql", "-c", "select 1"], ws, "psql")
    assert parsed.tool_args == ["-A", "-t", "-f", "@sqlrs-file:0", "-c", "select 1"]
    bench = parse_run_args(["-i", "-s", "10", "-f", "a.sql@5", "--time=3"], ws, "pgbench")
    assert bench.tool_args == ["-i", "-s", "10", "-f", "@sqlrs-file:0@5", "--time=3"]
    with pytest.raises(CliError):
        parse_run_args(["-h", "x"], ws, "pgbench")
    with pytest.raises(CliError):
        parse_run_args(["-o", "out.txt"], ws, "psql")
