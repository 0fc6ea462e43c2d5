"""Datalists, label-fraction splits, dataset adapters, loaders and phantom generators (the embedded default data)."""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("adapters", "check", "datalist", "loaders", "phantoms", "prepare", "readers", "split")

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 's4mi.data' has no attribute {name!r}")
