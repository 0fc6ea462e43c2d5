"""s4mi.handlers."""
