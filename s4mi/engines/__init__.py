"""s4mi.engines."""
