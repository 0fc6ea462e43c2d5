"""Datalists, label-fraction splits, dataset adapters and phantom generators (the embedded default data)."""
