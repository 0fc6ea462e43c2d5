"""Trainers: one file per method, each overriding only the iteration."""

from __future__ import annotations

from .mean_teacher import MeanTeacherTrainer
from .moco import MoCoKeys, MoCoTrainer
from .semi_supervised import Keys, LabelLeakError, SemiSupervisedTrainer

__all__ = ["Keys", "LabelLeakError", "MeanTeacherTrainer", "MoCoKeys", "MoCoTrainer", "SemiSupervisedTrainer"]
