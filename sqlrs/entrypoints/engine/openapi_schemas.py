"""The components of the engine API's OpenAPI document: the JSON Schemas of requests and answers.

`openapi.py` writes the paths and puts the document together; the schemas live apart because they
are most of it and change with the domain's records, not with the routes.
"""

from __future__ import annotations

from typing import Any

from sqlrs import extensions


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
# runtimes are plugins (entry point group sqlrs.runtimes): the engine checks a name against its own
RUNTIME = {"type": ["string", "null"], "examples": ["auto", *extensions.names(extensions.RUNTIMES, own=True)],
           "description": "auto (null: config container.runtime), or the name of a runtime registered in the entry "
                          "point group sqlrs.runtimes (GET /v1/status lists this engine's); another name is a 400"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
SPARES = {"type": "boolean", "description": "false: a one-off instance (what check:* and bisect:* make): the "
          "engine starts no warm instance or copy ahead of its state for it (default true)"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["code", "message", "details"],
              "properties": {"code": STRING, "message": STRING, "details": {"type": "object"}}},
    "Health": {"type": "object", "required": ["status", "version", "instance_id", "pid"],
               "properties": {"status": STRING, "version": STRING, "instance_id": STRING, "pid": INTEGER}},
    "ScriptFile": {"type": "object", "required": ["path", "content"],
                   "properties": {"path": STRING, "content": STRING,
                                  "includes": {"type": "array", "items": {
                                      "type": "object", "required": ["line", "file"],
                                      "properties": {"line": INTEGER, "file": INTEGER}}}}},
    "Step": {"type": "object", "required": ["kind", "source"],
             "properties": {"kind": {"enum": ["file", "command"]}, "source": STRING,
                            "files": {"type": "array", "items": ref("ScriptFile")}, "sql": NULLABLE_STRING,
                            "digest": {"type": ["string", "null"], "description":
                                       "sha256 of the normalized content; alone it stands for the content"}}},
    "PrepareRequest": {"type": "object", "required": ["steps"], "additionalProperties": False, "properties": {
        "steps": {"type": "array", "items": ref("Step")},
        "options": {"type": "object", "properties": {
            "variables": {"type": "array", "items": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 2}},
            "single_transaction": BOOLEAN}},
        "runtime": RUNTIME, "image": NULLABLE_STRING,
        "name": NULLABLE_STRING, "plan_only": BOOLEAN, "ephemeral": BOOLEAN,
        "on_name": {"enum": ["error", "reuse", "fresh"]},
        "ttl_seconds": {"type": ["integer", "null"], "minimum": 0,
                        "description": "Idle TTL of the new instance (0: none; null: config instance.ttl_seconds)"},
        "build_only": {"type": "boolean", "description": "Build the chain, start no instance; the job's "
                                                         "result carries state_id (and instance_id null)"},
        "from_state": {"type": ["string", "null"], "description":
                       "Start the chain from this cached state (id or unique prefix, e.g. a snapshot) instead of "
                       "the base: state_k = H(from_state, step_k); steps may then be empty (an instance of it). "
                       "Runs on the state's runtime; another runtime or image is refused"},
        "spares": SPARES,
        "instance_kind": {"enum": ["server", "database"], "description":
                          "server (default): a PostgreSQL server of its own; database: a database of its own in "
                          "the state's shared server (database-level isolation)"},
        "postgres_version": {"type": ["string", "null"], "pattern": "^[0-9]+$", "description":
                             "PostgreSQL major to run, e.g. \"16\": native binaries of that major "
                             "(/usr/lib/postgresql/N/bin, else the embedded build), docker/podman postgres:N unless "
                             "the image (or config dbms.image) is that major; part of the base state's identity. "
                             "null: the runtime's default"},
        "superuser": {"enum": [None, "postgres", "sqlrs"], "description":
                      "The cluster's bootstrap superuser (initdb -U): postgres (default) or sqlrs; psql steps run "
                      "as it; a sqlrs base has another id (docs/decisions/0011-bootstrap-superuser.md)"},
        "explain": {"type": "boolean", "description":
                    "With plan_only: the result's `explain` says per row why it is cached or not (code, reason, "
                    "the inputs that changed against the state built on the same parent)"}}},
    "SnapshotRequest": {"type": "object", "required": ["instance"], "additionalProperties": False, "properties": {
        "instance": {"type": "string", "description": "Instance id, unique prefix, or name"},
        "name": {"type": ["string", "null"], "description": "Kept in the state's source: 'snapshot of ID (NAME)'"}}},
    "PushRequest": {"type": "object", "required": ["state"], "additionalProperties": False, "properties": {
        "state": {"type": "string", "description": "state id (prefix), instance id or name"},
        "target": {"type": ["string", "null"], "description": "HOST[:PORT]/REPO[:TAG]; default: cache.remote, "
                                                              "tagged with the state id"},
        "runtime": NULLABLE_STRING, "image": NULLABLE_STRING}},
    "PullRequest": {"type": "object", "required": ["ref"], "additionalProperties": False, "properties": {
        "ref": {"type": "string", "description": "HOST[:PORT]/REPO:TAG|@DIGEST, or a state id of cache.remote"},
        "runtime": RUNTIME,
        "image": NULLABLE_STRING, "target": NULLABLE_STRING}},
    "JobCreated": {"type": "object", "required": ["job_id", "status", "status_url", "events_url"],
                   "properties": {"job_id": STRING, "status": STRING, "status_url": STRING, "events_url": STRING}},
    "Job": {"type": "object", "required": ["id", "kind", "status", "created_at", "finished_at", "error"],
            "properties": {"id": STRING, "kind": STRING,
                           "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                           "created_at": STRING, "started_at": NULLABLE_STRING, "finished_at": NULLABLE_STRING,
                           "error": {"type": ["object", "null"]}, "result": {"type": ["object", "null"]},
                           "tasks": {"type": "array"}}},
    "Event": {"type": "object", "required": ["type"],
              "properties": {"job_id": STRING, "seq": INTEGER, "ts": STRING, "type": STRING,
                             "data": {"type": "object"}}},
    "RunRequest": {"type": "object", "required": ["instance", "tool"], "additionalProperties": False, "properties": {
        "instance": STRING, "tool": {"enum": ["psql", "pgbench"]}, "args": {"type": "array", "items": STRING},
        "files": {"type": "array", "items": ref("Step")}}},
    "RunOutput": {"type": "object",
                  "description": "One NDJSON line: output, a warning (what failed after the tool ran; its exit code "
                                 "stands), an error, or the exit code (last).",
                  "properties": {"stream": {"enum": ["stdout", "stderr"]}, "data": STRING,
                                 "exit_code": INTEGER, "error": ref("Error"), "warning": ref("Error")}},
    "State": {"type": "object", "required": ["id", "parent_id", "size_bytes", "build_seconds", "created_at",
                                             "last_used_at", "instances"],
              "properties": {"id": STRING, "parent_id": NULLABLE_STRING, "base_id": STRING,
                             "step_hash": NULLABLE_STRING, "kind": STRING, "runtime": STRING, "source": STRING,
                             "size_bytes": INTEGER, "build_seconds": NUMBER, "created_at": STRING,
                             "last_used_at": STRING, "hits": INTEGER, "instances": INTEGER}},
    "Instance": {"type": "object", "required": ["id", "state_id", "name", "dsn", "runtime", "status", "created_at"],
                 "properties": {"id": STRING, "state_id": STRING, "name": NULLABLE_STRING, "dsn": STRING,
                                "runtime": STRING, "status": STRING, "host": STRING, "port": INTEGER,
                                "user": STRING, "password": STRING, "dbname": STRING, "image": NULLABLE_STRING,
                                "ephemeral": BOOLEAN, "job_id": NULLABLE_STRING, "created_at": STRING,
                                "last_used_at": STRING,
                                "ttl_seconds": {"type": "integer", "description": "Idle TTL; 0: none"},
                                "expires_in_seconds": {
                                    "type": ["number", "null"],
                                    "description": "Seconds left before an unused instance is removed; null: no "
                                                   "TTL. Stays at ttl_seconds while clients are connected"},
                                "connections": {"type": ["integer", "null"],
                                                "description": "Client connections seen by the last probe"},
                                "pooled": {"type": "boolean",
                                           "description": "A warm instance, not handed out yet (only with ?warm)"},
                                "from_pool": {"type": "boolean",
                                              "description": "POST /v1/instances only: handed out ready-made: "
                                                             "a warm server instance was claimed, or (kind "
                                                             "database) a database copied ahead"},
                                "seconds": {"type": "number",
                                            "description": "POST /v1/instances only: time the engine took"}}},
    "InstanceRequest": {
        "type": "object", "required": ["state_id"], "additionalProperties": False,
        "description": "An instance of a cached state (a prepare job with build_only gives a chain's state id). "
                       "A ready warm instance of the state is claimed (milliseconds; `pool` is implied); when "
                       "none is ready the engine waits for one being started, else starts an instance itself.",
        "properties": {"state_id": STRING, "image": NULLABLE_STRING, "pool": BOOLEAN,
                       "ttl_seconds": {"type": ["integer", "null"], "minimum": 0},
                       "name": NULLABLE_STRING, "spares": SPARES,
                       "kind": {"enum": ["server", "database"],
                                "description": "server (default), or database: a database of its own in the "
                                               "state's shared server (template copies made ahead; no warm claim)"},
                       "owner": {"anyOf": [ref("Owner"), {"type": "null"}],
                                 "description": "Remove the instance once this process is gone (the library "
                                                "and the pytest plugin send their own; the CLI none)"}}},
    "InstancePatch": {"type": "object", "required": ["ttl_seconds"], "additionalProperties": False,
                      "properties": {"ttl_seconds": {"type": "integer", "minimum": 0},
                                     "owner": {"type": "null",
                                               "description": "null: disown the instance (it outlives its "
                                                              "owner process)"}}},
    "Owner": {"type": "object", "required": ["pid", "started"], "additionalProperties": False,
              "description": "The client process a resource belongs to: its pid and start time (field 22 of "
                             "/proc/PID/stat, clock ticks since boot, so a reused pid is not mistaken for it). "
                             "The engine (on the same machine) removes what the owner held within seconds of "
                             "that process being gone.",
              "properties": {"pid": {"type": "integer", "minimum": 1}, "started": {"type": "integer", "minimum": 0}}},
    "PoolRequest": {
        "type": "object", "required": ["size"], "additionalProperties": False,
        "description": "Keep `size` warm instances of the state ready (all warm instances together: at "
                       "most warm.max_instances). A holder renews the pool; DELETE ?holder= leaves it, and the "
                       "last holder leaving ends it. A pool not used for warm.idle_seconds ends.",
        "properties": {"size": {"type": "integer", "minimum": 0}, "image": NULLABLE_STRING,
                       "holder": NULLABLE_STRING,
                       "wait_ready": {"type": "number", "minimum": 0, "maximum": 600,
                                      "description": "Answer once `size` spares are ready, or after this long"},
                       "owner": {"anyOf": [ref("Owner"), {"type": "null"}],
                                 "description": "Release the holder's hold once this process is gone"}}},
    "Pool": {"type": "object", "required": ["state_id", "size", "ready", "starting", "hits", "misses"],
             "properties": {"state_id": STRING, "size": INTEGER, "ready": INTEGER, "starting": INTEGER,
                            "runtime": STRING, "image": NULLABLE_STRING, "holders": INTEGER, "hits": INTEGER,
                            "misses": INTEGER, "created": INTEGER, "error": NULLABLE_STRING,
                            "drains_in_seconds": {"type": ["number", "null"]}}},
    "Warm": {"type": "object", "description": "Warm instances: started ahead for recently used states and pools",
             "required": ["enabled", "instances", "starting", "states"],
             "properties": {"enabled": BOOLEAN, "per_state": INTEGER, "max_states": INTEGER,
                            "max_instances": INTEGER, "idle_seconds": INTEGER, "instances": INTEGER,
                            "starting": INTEGER,
                            "states": {"type": "array", "items": {
                                "type": "object", "required": ["state_id", "ready", "starting", "instance_ids"],
                                "properties": {"state_id": STRING, "runtime": STRING, "image": NULLABLE_STRING,
                                               "ready": INTEGER, "starting": INTEGER, "target": INTEGER,
                                               "automatic": BOOLEAN, "hot": BOOLEAN, "pool_size": INTEGER,
                                               "holders": INTEGER, "hits": INTEGER, "misses": INTEGER,
                                               "instance_ids": {"type": "array", "items": STRING},
                                               "error": NULLABLE_STRING, "idle_seconds": NUMBER}}}}},
    "SessionRequest": {
        "type": "object", "required": ["state_id"], "additionalProperties": False,
        "description": "A run of claims on the state begins (a test session; PUT again for each state it uses). "
                       "While a session holds a state the engine keeps its spares (copies made ahead, warm "
                       "instances) at the run's demand, starting at its previous run's; once the session ends, "
                       "within seconds only the warm.idle_states most recently used states keep a small idle "
                       "level, and a superseded state (a newer version of its chain was used) keeps nothing.",
        "properties": {"state_id": STRING,
                       "owner": {"anyOf": [ref("Owner"), {"type": "null"}],
                                 "description": "End the session once this process is gone"}}},
    "Session": {"type": "object", "required": ["session", "state_id", "expected"],
                "properties": {"session": STRING, "state_id": STRING,
                               "expected": {"type": "integer", "minimum": 0,
                                            "description": "claims of the state's previous run, kept ahead now"}}},
    "SessionEnd": {"type": "object", "required": ["session", "ended", "state_ids"],
                   "properties": {"session": STRING, "ended": BOOLEAN,
                                  "state_ids": {"type": "array", "items": STRING}}},
    "SessionListed": {"type": "object", "required": ["session", "state_ids"],
                      "properties": {"session": STRING, "state_ids": {"type": "array", "items": STRING}}},
    "Footprint": {
        "type": "object", "required": ["servers", "memory", "database_instances", "copies_ready", "disk"],
        "description": "What the engine costs the machine now. memory: every process of every server (RSS sums "
                       "shared memory once per process, PSS shares it out; null when /proc cannot tell). disk: "
                       "allocated bytes; instances and shared servers count what they add to the states (on "
                       "copy-on-write stores, extents shared with a state count once); measured at most every "
                       "few seconds (measured_seconds_ago).",
        "properties": {
            "servers": {"type": "object", "required": ["warm", "shared", "user", "total"],
                        "properties": {"warm": INTEGER, "shared": INTEGER, "user": INTEGER, "total": INTEGER}},
            "memory": {"type": ["object", "null"],
                       "properties": {"processes": INTEGER, "rss_bytes": INTEGER,
                                      "pss_bytes": {"type": ["integer", "null"]}}},
            "database_instances": INTEGER, "copies_ready": INTEGER,
            "disk": {"type": ["object", "null"],
                     "properties": {"states_bytes": INTEGER, "instances_bytes": INTEGER, "shared_bytes": INTEGER,
                                    "total_bytes": INTEGER, "measured_seconds_ago": NUMBER}}}},
    "Demand": {"type": "object", "required": ["sessions", "idle_states", "busy", "idle"],
               "description": "States by level: busy (a session holds it, or claims came in the last seconds) and "
                              "idle (kept at the idle level); other states keep nothing started ahead",
               "properties": {"sessions": INTEGER, "idle_states": INTEGER,
                              "busy": {"type": "array", "items": STRING},
                              "idle": {"type": "array", "items": STRING}}},
    "PoolRelease": {"type": "object", "required": ["state_id", "drained", "holders"],
                    "properties": {"state_id": STRING, "drained": BOOLEAN, "holders": INTEGER,
                                   "not_found": BOOLEAN}},
    "Name": {"type": "object", "required": ["name", "instance_id", "created_at"],
             "properties": {"name": STRING, "instance_id": STRING, "created_at": STRING}},
    "Removal": {"type": "object", "required": ["dry_run", "removed"],
                "properties": {"dry_run": BOOLEAN, "not_found": BOOLEAN,
                               "removed": {"type": "array", "items": {"type": "object", "required": ["kind", "id"]}},
                               "refused": {"type": "array", "items": {
                                   "type": "object", "required": ["kind", "id", "clients"],
                                   "properties": {"clients": {"type": "array", "items": ref("ClientSession")}}}}}},
    "ClientSession": {"type": "object",
                      "required": ["pid", "user", "application_name", "client_addr", "backend_start"],
                      "properties": {"pid": INTEGER, "user": NULLABLE_STRING, "application_name": NULLABLE_STRING,
                                     "client_addr": NULLABLE_STRING, "backend_start": NULLABLE_STRING}},
    "Config": {"type": "object", "additionalProperties": {
        "type": "object", "required": ["value", "source"], "properties": {"value": {}, "source": STRING}}},
    "Status": {"type": "object", "required": ["engine", "runtime", "runtimes", "snapshot", "cache", "instances",
                                              "warnings"],
               "properties": {"engine": {"type": "object"}, "runtime": {"type": "object"},
                              "runtimes": {"type": "array"}, "snapshot": {"type": "object", "properties": {
                                  "backend": STRING, "copy_on_write": BOOLEAN, "root": STRING}},
                              "cache": {"type": "object"}, "instances": INTEGER,
                              "pools": {"type": "array", "items": ref("Pool")},
                              "warm": ref("Warm"),
                              "demand": ref("Demand"),
                              "footprint": ref("Footprint"),
                              "remote": {"type": ["object", "null"],
                                         "description": "cache.remote, cache.remote_push, cache.remote_insecure; "
                                                        "null when no remote cache is configured",
                                         "properties": {"repository": STRING, "push": {"type": "boolean"},
                                                        "insecure": {"type": "boolean"}}},
                              "warnings": {"type": "array", "items": STRING}}},
}

STRINGS = {"type": "array", "items": STRING}
SCHEMAS["CompareRequest"] = {"type": "object", "required": ["a", "b"], "additionalProperties": False, "properties": {
    "a": {"type": "string", "description": "a state (id or unique prefix), an instance (id, prefix) or a name"},
    "b": {"type": "string", "description": "the other side; `added` is what B has and A has not"},
    "data": {"enum": ["content", "rows", "none"], "description":
             "content (default): row counts, row digests and sequence positions; rows: row counts; none: schema"},
    "ignore": {**STRINGS, "description": "relations left out with all that belongs to them (qualified or bare "
                                         "names), e.g. a migration tool's version table"},
    "image": {"type": ["string", "null"], "description": "the image states were built with (container runtimes)"}}}
SCHEMAS["Comparison"] = {"type": "object", "required": ["equal", "schema", "tables", "sequences", "data", "a", "b"],
                         "properties": {
    "equal": BOOLEAN,
    "schema": {"type": "object", "required": ["added", "removed", "changed"],
               "properties": {"added": STRINGS, "removed": STRINGS, "changed": STRINGS}},
    "tables": {"type": "array", "items": {
        "type": "object", "required": ["name", "rows_a", "rows_b", "data_changed"],
        "properties": {"name": STRING, "rows_a": {"type": ["integer", "null"]}, "rows_b": {"type": ["integer", "null"]},
                       "data_changed": BOOLEAN}}},
    "sequences": {"type": "array", "description": "sequences whose position differs (data content only)", "items": {
        "type": "object", "required": ["name", "value_a", "value_b"],
        "properties": {"name": STRING, "value_a": {"type": ["integer", "null"]},
                       "value_b": {"type": ["integer", "null"]}}}},
    "data": {"enum": ["content", "rows", "none"]},
    "a": ref("ComparedSide"), "b": ref("ComparedSide"), "seconds": NUMBER,
    "timings": {"type": "object", "additionalProperties": NUMBER,
                "description": "seconds per phase: open (instances for states), describe, data, close"}}}
SCHEMAS["ComparedSide"] = {"type": "object", "required": ["ref", "kind", "id", "state_id"], "properties": {
    "ref": STRING, "kind": {"enum": ["state", "instance"]}, "id": STRING, "state_id": STRING,
    "name": NULLABLE_STRING, "source": STRING}}

# input kinds besides psql's (sqlrs/services/states/steps): facts that key a step, and how the engine runs it
PAIRS = {"type": "array", "items": {"type": "array", "items": STRING, "minItems": 2, "maxItems": 2}}
SCHEMAS["HostRun"] = {"type": "object", "required": ["cwd"], "properties": {
    "cwd": {"type": "string", "description": "absolute working directory (the CLI's cwd)"},
    "argv": {"type": "array", "items": STRING,
             "description": "exec: the command; alembic, django: [the user's python]"},
    "env": {**PAIRS, "description": "the caller's environment as [name, value]"},
    "params": {**PAIRS, "description": "kind-specific: alembic [config, revision, file]; django [settings, app, "
                                 "migration, file]"}}}
SCHEMAS["Step"]["properties"]["kind"] = {"enum": ["file", "command", "alembic", "exec", "liquibase", "django"]}
SCHEMAS["Step"]["properties"]["keyed"] = {
    **PAIRS, "description": "host kinds (alembic, exec, liquibase, django): the [name, value] facts that decide "
                            "the result, e.g. a revision file's sha256; their digest is the step's content digest"}
SCHEMAS["Step"]["properties"]["run"] = {"oneOf": [{"type": "null"}, ref("HostRun")],
                                        "description": "host kinds: how the engine runs the step; never keyed"}
