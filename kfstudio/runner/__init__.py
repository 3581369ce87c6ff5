"""The training and grow child processes the studio starts (no Qt: they run the core's generators)."""
