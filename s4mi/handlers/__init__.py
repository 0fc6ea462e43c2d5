"""Ignite/MONAI handlers: checkpoints, metrics, teacher updates, ramps, pseudo labels."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, RandomStates, ResumeLoader, ResumeSaver, latest_checkpoint
from .contrastive import ContrastiveMonitor
from .metrics import MacroConfusionMatrix, MeanAUC, PerSourceMetrics, TopOneAccuracy
from .metrics_logger import MetricsLogger
from .pseudo_labels import PseudoLabelRenderer
from .ramps import (
    ConstantRamp,
    CosineRampDown,
    GatedRamp,
    LinearRamp,
    Ramp,
    RampHandler,
    RampScheduler,
    SigmoidRamp,
    attach_ramp,
    ramp_from_config,
)
from .teacher import EMATeacher

__all__ = [
    "AtomicCheckpointSaver",
    "ConstantRamp",
    "ContrastiveMonitor",
    "CosineRampDown",
    "EMATeacher",
    "GatedRamp",
    "LinearRamp",
    "MacroConfusionMatrix",
    "MeanAUC",
    "PerSourceMetrics",
    "MetricsLogger",
    "PseudoLabelRenderer",
    "Ramp",
    "RampHandler",
    "RampScheduler",
    "RandomStates",
    "ResumeLoader",
    "ResumeSaver",
    "SigmoidRamp",
    "TopOneAccuracy",
    "attach_ramp",
    "latest_checkpoint",
    "ramp_from_config",
]
