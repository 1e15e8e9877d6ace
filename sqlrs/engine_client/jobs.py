"""Prepare jobs from the client's side: the request body, its protocol and following the job.

The protocol (docs/architecture.md, "A prepare, step by step"): a job is posted with every step
as its content digest only; when a step must be built the engine answers `409 content_required`
and the job is posted again with the scripts. A state evicted between that answer and the build
fails the job the same way, and the same happens. The job's events are then followed to its
end, resuming the stream from the last event seen whenever it breaks.
"""

from __future__ import annotations

import sys
import time

from sqlrs.engine_client.errors import EXIT_ENGINE, EXIT_USAGE, ClientError, TimedOut, raise_engine_error

TYPE_CHECKING = False  # typing is not imported on the CLI's hot path (sqlrs/entrypoints/cli/fast.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from sqlrs.engine_client.connection import EngineClient, Response
    from sqlrs.engine_client.psqlargs import ParsedPsql

    class ProgressSink(Protocol):
        """What follows a job's events: called with each, paused around prompts and warnings."""

        def __call__(self, event: dict[str, Any]) -> None: ...
        def pause(self) -> None: ...
        def resume(self) -> None: ...
        def close(self) -> None: ...

    # called on Ctrl+C while following a job: returns to keep following, or raises
    OnInterrupt = Callable[[EngineClient, str], None]

NDJSON = "application/x-ndjson"
JOBS = "/v1/prepare-jobs"


class NoProgress:
    """A progress sink that shows nothing."""

    def __call__(self, event: dict[str, Any]) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- the request body --------------------------------------------------------------------------------
def psql_chain(parsed: ParsedPsql) -> dict[str, Any]:
    """The `steps` and `options` of a psql chain (PSQL_ARGS read by psqlargs.parse_prepare_args)."""
    return {"steps": parsed.steps,
            "options": {"variables": [list(v) for v in parsed.variables],
                        "single_transaction": parsed.single_transaction}}


def job_body(chain: dict[str, Any], *, runtime: str | None = None, image: str | None = None,
             name: str | None = None, on_name: str = "error", plan_only: bool = False, ephemeral: bool = False,
             ttl_seconds: int | None = None, instance_kind: str | None = None,
             from_state: str | None = None) -> dict[str, Any]:
    """`POST /v1/prepare-jobs`'s body: the chain (`steps`, psql's `options`) and what to make of it."""
    body: dict[str, Any] = {**chain, "runtime": runtime, "image": image, "name": name, "plan_only": plan_only,
                            "ephemeral": ephemeral, "on_name": on_name}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if instance_kind is not None:
        body["instance_kind"] = instance_kind
    if from_state:
        body["from_state"] = from_state
    return body


def name_policy(name: str | None, reuse: bool, fresh: bool) -> str:
    """`on_name` for --reuse / --fresh (both need a name; they exclude each other)."""
    if reuse and fresh:
        raise ClientError("--reuse and --fresh exclude each other", EXIT_USAGE)
    if (reuse or fresh) and not name:
        raise ClientError("--reuse and --fresh need --name", EXIT_USAGE)
    return "reuse" if reuse else "fresh" if fresh else "error"


def lean(body: dict[str, Any]) -> dict[str, Any]:
    """The request with every step as its content digest only: enough when the chain is cached."""
    from sqlrs.domain.scripts import content_digest, normalized_content

    steps = []
    for step in body["steps"]:
        if "run" in step:  # host kinds (alembic, exec, liquibase): hashed when they were read
            steps.append({"kind": step["kind"], "source": step["source"], "digest": step["digest"]})
            continue
        if step["kind"] == "command":
            text = step["sql"]
        else:
            text = normalized_content([(f["content"], [(i["line"], i["file"]) for i in f["includes"]])
                                       for f in step["files"]])
        steps.append({"kind": step["kind"], "source": step["source"], "digest": content_digest(text)})
    return {**body, "steps": steps}


# -- submitting --------------------------------------------------------------------------------------
def post_job(client: EngineClient, body: dict[str, Any], watch: bool) -> tuple[dict[str, Any], Response | None]:
    """POST a job: (the created job, its open event stream when `watch`)."""
    if not watch:
        data: dict[str, Any] = client.call("POST", JOBS, body)
        return data, None
    response = client.request("POST", JOBS + "?watch=true", body, timeout=None, accept=NDJSON)
    if response.status != 201:
        raise_engine_error(response.status, response.json())
    created = next(response.lines())  # the rest of the stream is the job's events
    return created, response


def submit(client: EngineClient, body: dict[str, Any], watch: bool = False) -> tuple[dict[str, Any], Response | None]:
    """Submit a job; scripts travel only when the engine says it has to build from them."""
    if body["steps"]:
        try:
            return post_job(client, lean(body), watch)
        except ClientError as error:
            if error.code != "content_required":
                raise
    return post_job(client, body, watch)


def prepare(client: EngineClient, body: dict[str, Any], progress: Callable[[], ProgressSink], *,
            interrupt: OnInterrupt | None = None, quiet: bool = False) -> dict[str, Any]:
    """Submit a job and follow it to its end: its result (state_id, instance_id, dsn, plan...).
    `progress` makes the sink for each job followed."""
    submitted, stream = submit(client, body, watch=True)
    try:
        result = follow(client, submitted["job_id"], progress(), stream=stream, interrupt=interrupt, quiet=quiet)
        return {**result, "job_id": submitted["job_id"]}
    except ClientError as error:
        if error.code != "content_required":
            raise
        # a cached state was evicted between submitting and building: send the scripts this time
        full = client.call("POST", JOBS, body)
        result = follow(client, full["job_id"], progress(), interrupt=interrupt, quiet=quiet)
        return {**result, "job_id": full["job_id"]}


# -- following ---------------------------------------------------------------------------------------
def cancel(client: EngineClient, job_id: str) -> None:
    """Ctrl+C without a terminal to ask on: cancel the job (finished steps stay cached), stop."""
    client.call("POST", f"{JOBS}/{job_id}/cancel")
    raise KeyboardInterrupt


def follow(client: EngineClient, job_id: str, progress: ProgressSink, *, stream: Response | None = None,
           interrupt: OnInterrupt | None = None, quiet: bool = False) -> dict[str, Any]:
    """Follow a job's events to its end; return its result or raise its error.

    `stream` is an already open event stream (from `POST ...?watch=true`). The stream is resumed
    from the last event seen whenever it breaks or Ctrl+C was pressed and `interrupt` returned
    (default: `cancel`), so nothing is missed. Warnings go to stderr unless `quiet`.
    """
    after = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status = None
    try:
        while status not in ("succeeded", "failed", "cancelled"):
            try:
                if stream is not None:
                    response, stream = stream, None
                else:
                    response = client.request("GET", f"{JOBS}/{job_id}/events?after={after}", timeout=None)
                if response.status not in (200, 201):
                    raise_engine_error(response.status, response.json())
                for event in response.lines():
                    if event.get("type") in ("heartbeat", "created"):
                        continue
                    after = int(event.get("seq", after))
                    kind, data = event.get("type"), event.get("data", {})
                    if kind == "result":
                        result = data
                    elif kind == "error":
                        error = data
                    elif kind == "status":
                        status = data.get("status")
                    elif kind == "warning" and not quiet:
                        progress.pause()  # loud: its own line on stderr, whatever the progress style
                        sys.stderr.write(f"WARNING: {data.get('text', '')}\n")
                        sys.stderr.flush()
                        progress.resume()
                    progress(event)
            except TimedOut:
                try:  # the job is given up: its finished steps stay cached, the rest is not built
                    client.call("POST", f"{JOBS}/{job_id}/cancel")
                except (ClientError, OSError):
                    pass
                raise
            except KeyboardInterrupt:
                progress.pause()
                try:
                    (interrupt or cancel)(client, job_id)
                finally:
                    progress.resume()
            except (OSError, ValueError):
                time.sleep(0.2)  # the stream broke: resume from the last event seen
    finally:
        progress.close()
    if error is not None:
        raise ClientError.from_engine(error)
    if status != "succeeded" or result is None:
        raise ClientError(f"job {job_id} ended as {status}", EXIT_ENGINE)
    return result
