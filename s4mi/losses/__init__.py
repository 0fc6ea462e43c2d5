"""s4mi.losses."""
