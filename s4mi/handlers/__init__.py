"""Ignite/MONAI handlers: checkpoints, metrics, teacher updates, ramps, pseudo labels."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, latest_checkpoint
from .metrics import MeanAUC
from .metrics_logger import MetricsLogger

__all__ = ["AtomicCheckpointSaver", "MeanAUC", "MetricsLogger", "latest_checkpoint"]
