"""s4mi: Self-Supervision and Semi-Supervision for Medical Imaging, on MONAI and PyTorch-Ignite."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
