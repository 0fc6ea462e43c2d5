"""s4mi.networks."""
