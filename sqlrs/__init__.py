"""sqlrs: disposable PostgreSQL databases built from cached, content-hashed SQL steps."""

__version__ = "0.1.0"
