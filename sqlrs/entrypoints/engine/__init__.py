"""The engine process: Starlette app on Hypercorn, over a Unix socket."""
