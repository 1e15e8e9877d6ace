"""sqlrs' version (stdlib only, no imports: the engine client sends it with every request, on the
CLI's hot path). `sqlrs.__version__` is the same value."""

__version__ = "0.1.0"
