"""Ways in: the thin CLI and the engine process."""
