"""The engine API's OpenAPI document, written as data: the paths here, the schemas in
`openapi_schemas.py`.

`python -m sqlrs.entrypoints.engine.openapi > sqlrs/entrypoints/engine/openapi.json` refreshes
the committed copy; tests check that the app's routes and answers agree with it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlrs import __version__
from sqlrs.entrypoints.engine.openapi_schemas import BOOLEAN, INTEGER, SCHEMAS, STRING, ref


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(name: str) -> dict[str, Any]:
    return {"description": "A JSON array, or NDJSON with Accept: application/x-ndjson",
            "content": {"application/json": {"schema": {"type": "array", "items": ref(name)}},
                        "application/x-ndjson": {"schema": ref(name)}}}


ERRORS = {
    "400": _json(ref("Error"), "Invalid request"),
    "401": _json(ref("Error"), "Missing or wrong bearer token"),
    "404": _json(ref("Error"), "Not found"),
    "409": _json(ref("Error"), "Conflict, ambiguous id, or incompatible CLI version"),
}


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: str | None = None, auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **(ERRORS if auth else {})}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if not auth:
        op["security"] = []
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _flag(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "boolean"},
            "description": description}




def document() -> dict[str, Any]:
    job_id = _path_param("job_id", "Job id or unique prefix")
    state_id = _path_param("state_id", "State id or unique prefix")
    instance_id = _path_param("instance_id", "Instance id, unique prefix, or name (307 to the id URL)")
    session = _path_param("session", "The client's name for its session (1 to 200 characters, no /)")
    paths: dict[str, Any] = {
        "/v1/health": {"get": _op("Liveness; no token needed", {"200": _json(ref("Health"))}, auth=False)},
        "/v1/prepare-jobs": {
            "post": _op("Start a prepare (or plan_only) job; with ?watch=true the answer is an NDJSON stream: "
                        "a `created` line (the JobCreated fields), then the job's events",
                        {"201": {"description": "Created", "content": {
                            "application/json": {"schema": ref("JobCreated")},
                            "application/x-ndjson": {"schema": ref("Event")}}},
                         "409": _json(ref("Error"), "content_required: send the steps' content, or a conflict")},
                        body="PrepareRequest",
                        params=[_flag("watch", "stream the job's events in the answer")]),
            "get": _op("List jobs", {"200": _list("Job")}),
        },
        "/v1/prepare-jobs/{job_id}": {"get": _op("A job with its tasks", {"200": _json(ref("Job"))},
                                                 params=[job_id])},
        "/v1/prepare-jobs/{job_id}/events": {"get": _op(
            "Job events as NDJSON, resumable with ?after=SEQ; heartbeat lines while nothing happens",
            {"200": {"description": "NDJSON stream", "content": {"application/x-ndjson": {"schema": ref("Event")}}}},
            params=[job_id, {"name": "after", "in": "query", "schema": INTEGER},
                    {"name": "follow", "in": "query", "schema": BOOLEAN}])},
        "/v1/prepare-jobs/{job_id}/cancel": {"post": _op("Ask a running job to stop",
                                                         {"202": _json({"type": "object"}, "Accepted"),
                                                          "200": _json({"type": "object"}, "Not running")},
                                                         params=[job_id])},
        "/v1/push-jobs": {"post": _op(
            "Push a state with its chain to an OCI registry (a job: follow it at events_url; its result has "
            "reference, digest, uploaded and reused layer digests)",
            {"201": _json(ref("JobCreated"), "Created")}, body="PushRequest")},
        "/v1/pull-jobs": {"post": _op(
            "Pull a state with its chain from an OCI registry (a job; its result has state_id and the ids pulled)",
            {"201": _json(ref("JobCreated"), "Created")}, body="PullRequest")},
        "/v1/runs": {"post": _op("Run psql or pgbench against an instance; output streams as NDJSON",
                                 {"200": {"description": "NDJSON stream",
                                          "content": {"application/x-ndjson": {"schema": ref("RunOutput")}}}},
                                 body="RunRequest")},
        "/v1/states": {"get": _op("List states", {"200": _list("State")})},
        "/v1/states/{state_id}": {
            "get": _op("One state", {"200": _json(ref("State"))}, params=[state_id]),
            "delete": _op("Remove a state (idempotent)", {"200": _json(ref("Removal"))},
                          params=[state_id, _flag("recurse", "also dependent states and instances"),
                                  _flag("force", "even when a running job uses it"),
                                  _flag("dry_run", "only say what would go")]),
        },
        "/v1/instances": {
            "get": _op("List instances (not the engine's warm instances unless ?warm)", {"200": _list("Instance")},
                       params=[_flag("warm", "also the warm instances (started ahead, not handed out yet)")]),
            "post": _op("Start an instance of a cached state, or claim one of its warm instances",
                        {"201": _json(ref("Instance"), "Created")}, body="InstanceRequest"),
        },
        "/v1/instances/{instance_id}": {
            "get": _op("One instance", {"200": _json(ref("Instance")),
                                        "307": {"description": "Resolved by name or prefix"}},
                       params=[instance_id]),
            "patch": _op("Change the instance's idle TTL (0: keep it until removed)",
                         {"200": _json(ref("Instance"))}, params=[instance_id], body="InstancePatch"),
            "delete": _op("Remove an instance (idempotent). While clients are connected: 409 `in_use` with "
                          "details.clients (pid, user, application_name, client_addr, backend_start), "
                          "unless ?force=true; a dry run lists them under `refused` instead",
                          {"200": _json(ref("Removal"))},
                          params=[instance_id, _flag("dry_run", "only say what would go"),
                                  _flag("force", "remove even with clients connected")]),
        },
        "/v1/pools": {"get": _op("List warm pools", {"200": _list("Pool")})},
        "/v1/pools/{state_id}": {
            "get": _op("One warm pool", {"200": _json(ref("Pool"))}, params=[state_id]),
            "put": _op("Create or resize the state's warm pool (and join it as a holder)",
                       {"200": _json(ref("Pool"))}, params=[state_id], body="PoolRequest"),
            "delete": _op("Leave the pool as ?holder=, or drain it (idempotent; answers at once, the engine "
                          "removes the spares in the background)",
                          {"200": _json(ref("PoolRelease"))},
                          params=[state_id, {"name": "holder", "in": "query", "required": False,
                                             "schema": STRING,
                                             "description": "drain only when no other holder is left"}]),
        },
        "/v1/sessions": {"get": _op("List open sessions", {"200": _list("SessionListed")})},
        "/v1/sessions/{session}": {
            "put": _op("Begin a session on a state (or add a state to it)", {"200": _json(ref("Session"))},
                       params=[session], body="SessionRequest"),
            "delete": _op("End the session (idempotent): its states' spares fall back within seconds",
                          {"200": _json(ref("SessionEnd"))}, params=[session]),
        },
        "/v1/snapshots": {"post": _op(
            "Save a running instance's current data as a new state (kind snapshot, child of the instance's "
            "state, never evicted automatically). Online: the instance keeps running and its clients stay "
            "connected", {"201": _json(ref("State"), "Created")}, body="SnapshotRequest")},
        "/v1/cache/{key}": {"get": _op("Look up a cache key: a state id, full or unique prefix (404 not_found)",
                                       {"200": _json(ref("State"))},
                                       params=[_path_param("key", "State id or unique prefix")])},
        "/v1/compare": {"post": _op(
            "Compare two states or instances: schema objects added, removed or changed from A to B, and per "
            "table the row counts and whether the rows differ (digests computed in each server). A state is "
            "read through an instance made for it and removed afterwards",
            {"200": _json(ref("Comparison"))}, body="CompareRequest")},
        "/v1/names": {"get": _op("List names", {"200": _list("Name")})},
        "/v1/names/{name}": {"get": _op("One name", {"200": _json(ref("Name"))},
                                        params=[_path_param("name", "Name")])},
        "/v1/config": {
            "get": _op("Effective configuration with sources", {"200": _json(ref("Config"))}),
            "patch": _op("Set keys (null unsets)", {"200": _json(ref("Config"))},
                         body=None),
        },
        "/v1/config/schema": {"get": _op("JSON Schema of the configuration", {"200": _json({"type": "object"})})},
        "/v1/status": {"get": _op("Engine, runtime, snapshot backend, cache",
                                  {"200": _json(ref("Status"))}, params=[_flag("cache", "per-state details")])},
        "/v1/engine/shutdown": {"post": _op("Stop the engine", {"202": _json({"type": "object"}, "Accepted")})},
        "/v1/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})})},
    }
    paths["/v1/config"]["patch"]["requestBody"] = {
        "required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sqlrs engine API", "version": __version__.split(".")[0] + ".x",
                 "description": "Served by the sqlrs engine over a Unix socket (docs/architecture.md)."},
        "servers": [{"url": "unix:///<state_dir>/engine.sock"}],
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": paths,
    }


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, sort_keys=True))
