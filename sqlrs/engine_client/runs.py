"""`POST /v1/runs`: psql or pgbench run where the instance runs, its output streamed back.

Script files named in the tool's arguments are read here (with their includes) and sent along;
the arguments then name them `@sqlrs-file:N` (psqlargs.FILE_TOKEN).
"""

from __future__ import annotations

from sqlrs.engine_client.errors import raise_engine_error
from sqlrs.engine_client.psqlargs import FILE_TOKEN

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from sqlrs.engine_client.connection import EngineClient
    from sqlrs.engine_client.psqlargs import ParsedPsql


def run_body(instance: str, tool: str, parsed: ParsedPsql, script: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request: the tool's arguments and files as parsed, plus `script` (stdin, or text given
    by a program) run as one more `-f`."""
    files = list(parsed.steps)
    args = list(parsed.tool_args)
    if script is not None:
        files.append(script)
        args += ["-f", f"{FILE_TOKEN}{len(files) - 1}"]
    return {"instance": instance, "tool": tool, "args": args, "files": files}


def run_items(client: EngineClient, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The run's NDJSON items as they come: `{"stream", "data"}` output, `{"error"}` when the
    engine could not run the tool, `{"exit_code"}` last."""
    response = client.request("POST", "/v1/runs", body, timeout=None, accept="application/x-ndjson")
    if response.status != 200:
        raise_engine_error(response.status, response.json())
    return response.lines()
