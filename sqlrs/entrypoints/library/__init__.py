"""The Python library (`sqlrs.Client` and its types, imported from `sqlrs`): a façade over
sqlrs.engine_client, as the CLI is; it never imports the CLI or the engine (tests/unit/test_layers_library.py)."""
