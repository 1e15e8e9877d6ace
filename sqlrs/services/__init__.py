"""Application services: what the engine does, written against the ports only."""
