"""s4mi.transforms."""
