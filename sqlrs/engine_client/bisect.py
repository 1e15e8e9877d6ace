"""`bisect:KIND --check FILE`: the first step of a chain after which a psql check script fails.

The chain's states 0..N (0: the base or --from state) are searched as `git bisect` searches
commits, assuming the base passes and the last state fails: each probe is an instance of the
middle state (from the cache, or built: a probe builds at most the steps up to it, so a failure
early in a long chain never builds its tail), the check run on it by psql with ON_ERROR_STOP, and
half of the interval dropped. The two assumptions are tested only when the search ends next to
them: a check that already fails on the base, or still passes on the last state, is reported as
such. At most ceil(log2(N)) + 2 states are checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlrs.engine_client.errors import ClientError
from sqlrs.engine_client.prefixes import Chain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sqlrs.engine_client.connection import EngineClient
    from sqlrs.engine_client.psqlargs import ParsedPsql

PSQL_SCRIPT_FAILED = 3  # psql's exit code when ON_ERROR_STOP stopped the script

FOUND = "found"
FAILS_ON_BASE = "fails_on_base"
PASSES_ON_LAST = "passes_on_last"


class PsqlCheck:
    """A psql script run against an instance: passes when psql exits 0, fails when ON_ERROR_STOP
    stopped it; anything else (psql could not connect, say) is an error, not a verdict."""

    def __init__(self, client: EngineClient, parsed: ParsedPsql):
        self.client = client
        self.parsed = parsed

    def __call__(self, instance: dict[str, Any]) -> tuple[bool, str]:
        from sqlrs.engine_client.runs import run_body, run_items

        output: list[str] = []
        code = 1
        for item in run_items(self.client, run_body(instance["id"], "psql", self.parsed)):
            if "stream" in item:
                output.append(item["data"])
            if "error" in item:
                raise ClientError.from_engine(item["error"])
            if "exit_code" in item:
                code = int(item["exit_code"])
        text = "".join(output)
        if code not in (0, PSQL_SCRIPT_FAILED):
            raise ClientError(f"the check could not run (psql exited with {code}): {_last(text)}")
        return code == 0, text


def check_args(file: str) -> list[str]:
    """psql's arguments for a check script: no psqlrc, stop at the first error."""
    return ["-X", "-v", "ON_ERROR_STOP=1", "-f", file]


def _last(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR:" in line or "FATAL:" in line or "error:" in line]
    return (errors or lines or ["(no output)"])[-1]


def bisect(chain: Chain, check: Callable[[dict[str, Any]], tuple[bool, str]], *,
           note: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Search the chain for the first state the check fails on. The result: `first_bad` {index,
    source, state_id, error} (None when the last state passes), `verdict` (found, fails_on_base,
    passes_on_last), `tested` (states checked), `steps` (N) and `probes` [{index, passed}]."""
    steps = len(chain)
    plan = chain.plan()
    probes: list[dict[str, Any]] = []
    errors: dict[int, str] = {}

    def passes(k: int) -> bool:
        row = plan[k]
        note(f"checking state {k}/{steps} ({row['source']})...")
        with chain.instance(k) as instance:
            passed, output = check(instance)
        probes.append({"index": k, "passed": passed})
        if not passed:
            errors[k] = _last(output)
        note(f"  {'passes' if passed else 'fails: ' + errors[k]}")
        return passed

    good, bad = 0, steps  # assumed until tested: the base passes, the last state fails
    while bad - good > 1:
        middle = (good + bad) // 2
        if passes(middle):
            good = middle
        else:
            bad = middle
    tested = {probe["index"] for probe in probes}
    verdict = FOUND
    if bad == steps and steps not in tested and passes(steps):
        verdict = PASSES_ON_LAST
    elif good == 0 and 0 not in tested and not passes(0):
        verdict, bad = FAILS_ON_BASE, 0
    first_bad = None
    if verdict != PASSES_ON_LAST:
        row = plan[bad]
        first_bad = {"index": bad, "source": row["source"], "state_id": row["state_id"], "error": errors.get(bad)}
    return {"first_bad": first_bad, "verdict": verdict, "tested": len(probes), "steps": steps, "probes": probes}
