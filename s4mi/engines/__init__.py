"""Trainers: one file per method, each overriding only the iteration."""

from __future__ import annotations

from .mean_teacher import MeanTeacherTrainer
from .moco import MoCoKeys, MoCoTrainer
from .online_pseudo_label import OnlinePseudoLabelTrainer
from .semi_supervised import Keys, LabelLeakError, SemiSupervisedTrainer

__all__ = [
    "Keys",
    "LabelLeakError",
    "MeanTeacherTrainer",
    "MoCoKeys",
    "MoCoTrainer",
    "OnlinePseudoLabelTrainer",
    "SemiSupervisedTrainer",
]
