"""`--provenance-path FILE`: a JSON record of what a prepare or plan used and what came of it.

Written after the command, whether it succeeded or failed once its input was read (a usage
error before that writes nothing). It holds no DSN, password or token: it is meant to be kept
with a CI run's artifacts. Shape (docs/cli.md, "Provenance"):

    {"format": "sqlrs-provenance/1", "sqlrs_version", "command" (argv), "mode" (prepare|plan),
     "started_at", "finished_at", "cwd", "workspace", "alias", "ref" ({requested, commit, mode}),
     "request" ({runtime, image, postgres_version, superuser, from_state}),
     "runtime" ({name, identity}), "steps" ([{index, kind, source, state_id, cached,
     inputs: [{input, sha256}]}]), "result" ({status, job_id, state_id, instance_id, error})}
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sqlrs.domain.scripts import step_inputs
from sqlrs.engine_client.errors import ClientError

FORMAT = "sqlrs-provenance/1"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _live_cwd(source: Any) -> str:
    """The caller's directory (under --ref the process works in the revision's copy of it)."""
    if source is None:
        return os.getcwd()
    return os.path.normpath(os.path.join(source.repo, os.path.relpath(source.cwd, source.tree)))


class Record:
    def __init__(self, path: str, mode: str, body: dict[str, Any], source: Any, settings: Any, alias: str | None):
        from sqlrs import __version__

        self.path = path
        self.job_id: str | None = None
        self.plan: dict[str, Any] = {}
        self.data: dict[str, Any] = {
            "format": FORMAT, "sqlrs_version": __version__, "command": ["sqlrs", *sys.argv[1:]], "mode": mode,
            "started_at": _now(), "cwd": _live_cwd(source),
            "workspace": settings.root, "alias": alias,
            "ref": source.to_json() if source is not None else None,
            "request": {key: body.get(key) for key in ("runtime", "image", "postgres_version", "superuser",
                                                        "from_state")},
        }
        self.inputs = [step_inputs(step) for step in body.get("steps", [])]

    def watching(self, sink: Any) -> Any:
        """`sink` that also remembers the job's plan event (runtime, identity, the chain)."""
        record = self

        class Watch:
            def __call__(self, event: dict[str, Any]) -> None:
                if event.get("type") == "plan":
                    record.plan = event.get("data", {})
                sink(event)

            def pause(self) -> None:
                sink.pause()

            def resume(self) -> None:
                sink.resume()

            def close(self) -> None:
                sink.close()

        return Watch()

    def finish(self, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        plan = self.plan.get("steps") or (result or {}).get("plan") or []
        steps = []
        for row in plan:
            index = int(row.get("index", 0))
            entry = {key: row.get(key) for key in ("index", "kind", "source", "state_id", "cached")}
            if row.get("kind") != "base" and 0 < index <= len(self.inputs):
                entry["inputs"] = [{"input": name, "sha256": digest} for name, digest in self.inputs[index - 1]]
            steps.append(entry)
        outcome: dict[str, Any] = {"status": "succeeded" if error is None else
                                   "cancelled" if isinstance(error, KeyboardInterrupt) else "failed",
                                   "job_id": self.job_id}
        if result is not None:
            outcome.update({key: result.get(key) for key in ("state_id", "instance_id") if key in result})
            outcome["job_id"] = outcome["job_id"] or result.get("job_id")
        if error is not None:
            outcome["error"] = error.message if isinstance(error, ClientError) else (str(error) or type(error).__name__)
        self.data.update(runtime={"name": self.plan.get("runtime") or (result or {}).get("runtime"),
                                  "identity": self.plan.get("identity") or (result or {}).get("identity")},
                         steps=steps, result=outcome, finished_at=_now())
        directory = os.path.dirname(self.path) or "."
        temporary = f"{self.path}.tmp{os.getpid()}"
        try:
            os.makedirs(directory, exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(self.data, handle, indent=2)
                handle.write("\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            raise ClientError(f"--provenance-path {self.path}: cannot write it: {exc.strerror or exc}") from None
