"""s4mi: Self-Supervision and Semi-Supervision for Medical Imaging, on MONAI and PyTorch-Ignite."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "keys",
    "benchmark",
    "bundle",
    "cli",
    "data",
    "demo",
    "engines",
    "handlers",
    "losses",
    "metrics",
    "networks",
    "probe",
    "transforms",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    # Lazy submodules: bundle configs say `$import s4mi` and then reach `s4mi.data.prepare...` by attribute.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 's4mi' has no attribute {name!r}")
