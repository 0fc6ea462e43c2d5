"""Ignite/MONAI handlers: checkpoints (training state, pretrained and teacher weights), metrics, teacher updates,
ramps, pseudo labels, feature probes."""

from __future__ import annotations

from .attention import AttentionInMask, attention_share, grad_cam
from .checkpoint import (
    AtomicCheckpointSaver,
    BestModelSaver,
    FiniteSaveHandler,
    RandomStates,
    ResumeLoader,
    ResumeSaver,
    latest_checkpoint,
)
from .console import EpochLossLogger, RunLengthLogger
from .contrastive import ContrastiveMonitor
from .metrics import MacroConfusionMatrix, MeanAUC, PerClassMetrics, PerSourceMetrics, SurfaceDistance, TopOneAccuracy
from .metrics_logger import MetricsLogger
from .non_finite import NonFiniteError, NonFiniteGuard
from .pretrained import (
    export_teacher,
    load_pretrained_backbone,
    load_teacher,
    save_pretrained_backbone,
    save_pretrained_backbones,
    save_teachers,
)
from .probe import ProbeHandler
from .pseudo_label_cache import PseudoLabelCache
from .pseudo_label_writer import PseudoLabelWriter
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
    WarmupCosine,
    attach_ramp,
    ramp_from_config,
)
from .teacher import EMATeacher

__all__ = [
    "AttentionInMask",
    "attention_share",
    "grad_cam",
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "FiniteSaveHandler",
    "ConstantRamp",
    "ContrastiveMonitor",
    "CosineRampDown",
    "EMATeacher",
    "EpochLossLogger",
    "GatedRamp",
    "LinearRamp",
    "MacroConfusionMatrix",
    "MeanAUC",
    "PerClassMetrics",
    "PerSourceMetrics",
    "ProbeHandler",
    "MetricsLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "PseudoLabelCache",
    "PseudoLabelRenderer",
    "PseudoLabelWriter",
    "Ramp",
    "RampHandler",
    "RampScheduler",
    "RandomStates",
    "RunLengthLogger",
    "ResumeLoader",
    "ResumeSaver",
    "SigmoidRamp",
    "SurfaceDistance",
    "TopOneAccuracy",
    "WarmupCosine",
    "attach_ramp",
    "export_teacher",
    "latest_checkpoint",
    "load_pretrained_backbone",
    "load_teacher",
    "ramp_from_config",
    "save_pretrained_backbone",
    "save_pretrained_backbones",
    "save_teachers",
]
