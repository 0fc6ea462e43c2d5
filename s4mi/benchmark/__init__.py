"""The S4MI benchmark protocol: methods x label fractions x seeds -> tables and plots."""

from __future__ import annotations

from .runner import RunSpec, run_grid, summarise, write_reports

__all__ = ["RunSpec", "run_grid", "summarise", "write_reports"]
