"""Ways in: the thin CLI (`cli/`), the engine process (`engine/`), the Python library (`library/`),
the pytest plugin (`pytest/`) and Django's test runner (`django/`)."""
