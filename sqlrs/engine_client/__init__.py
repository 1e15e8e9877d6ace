"""The client side of the engine's API, shared by the CLI and the Python library.

Finding or spawning the engine (`connection`), the HTTP-over-Unix-socket wire (`wire`), reading
PSQL_ARGS and the host input kinds into steps (`psqlargs`, `hostinputs`, `liquibase`), the
prepare request body and its protocol (digests first, content on `content_required`), following
a job's events (`jobs`), running psql/pgbench (`runs`) and the errors all of these raise
(`errors`). Standard library only on the CLI's hot path: nothing here imports Click, attrs or
anything of the engine, and this package imports none of its modules itself.
"""
