"""s4mi.benchmark."""
