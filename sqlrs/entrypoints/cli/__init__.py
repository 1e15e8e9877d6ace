"""The thin `sqlrs` CLI: parses, reads local files, talks to the engine, prints."""
