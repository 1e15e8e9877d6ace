"""The engine's route table: every path and method of the HTTP API, handled by module-level
functions grouped by resource. openapi.json documents exactly these (tests/integration/test_api.py
compares the two)."""

from __future__ import annotations

from starlette.routing import Route

from sqlrs.entrypoints.engine.routes import compare, config, engine, instances, jobs, pools, runs, sessions, states

ROUTES = [
    Route("/v1/health", engine.health, methods=["GET"]),
    Route("/v1/prepare-jobs", jobs.create_job, methods=["POST"]),
    Route("/v1/prepare-jobs", jobs.list_jobs, methods=["GET"]),
    Route("/v1/prepare-jobs/{job_id}", jobs.get_job, methods=["GET"]),
    Route("/v1/prepare-jobs/{job_id}/events", jobs.job_events, methods=["GET"]),
    Route("/v1/prepare-jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
    Route("/v1/push-jobs", jobs.create_push_job, methods=["POST"]),
    Route("/v1/pull-jobs", jobs.create_pull_job, methods=["POST"]),
    Route("/v1/runs", runs.create_run, methods=["POST"]),
    Route("/v1/states", states.list_states, methods=["GET"]),
    Route("/v1/states/{state_id}", states.get_state, methods=["GET"]),
    Route("/v1/states/{state_id}", states.delete_state, methods=["DELETE"]),
    Route("/v1/instances", instances.list_instances, methods=["GET"]),
    Route("/v1/instances", instances.create_instance, methods=["POST"]),
    Route("/v1/instances/{instance_id}", instances.get_instance, methods=["GET"]),
    Route("/v1/instances/{instance_id}", instances.patch_instance, methods=["PATCH"]),
    Route("/v1/instances/{instance_id}", instances.delete_instance, methods=["DELETE"]),
    Route("/v1/pools", pools.list_pools, methods=["GET"]),
    Route("/v1/pools/{state_id}", pools.get_pool, methods=["GET"]),
    Route("/v1/pools/{state_id}", pools.put_pool, methods=["PUT"]),
    Route("/v1/pools/{state_id}", pools.delete_pool, methods=["DELETE"]),
    Route("/v1/sessions", sessions.list_sessions, methods=["GET"]),
    Route("/v1/sessions/{session}", sessions.put_session, methods=["PUT"]),
    Route("/v1/sessions/{session}", sessions.delete_session, methods=["DELETE"]),
    Route("/v1/names", instances.list_names, methods=["GET"]),
    Route("/v1/names/{name}", instances.get_name, methods=["GET"]),
    Route("/v1/snapshots", states.create_snapshot, methods=["POST"]),
    Route("/v1/cache/{key}", states.get_cache_entry, methods=["GET"]),
    Route("/v1/compare", compare.create_comparison, methods=["POST"]),
    Route("/v1/config", config.get_config, methods=["GET"]),
    Route("/v1/config", config.patch_config, methods=["PATCH"]),
    Route("/v1/config/schema", config.get_config_schema, methods=["GET"]),
    Route("/v1/status", engine.status, methods=["GET"]),
    Route("/v1/engine/shutdown", engine.shutdown, methods=["POST"]),
    Route("/v1/openapi.json", engine.openapi, methods=["GET"]),
]
