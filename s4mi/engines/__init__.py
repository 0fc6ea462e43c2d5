"""Trainers: one base (:class:`SSLTrainer`) and one file per method, each writing only its batch split and step."""

from __future__ import annotations

from s4mi.keys import Keys

from .base import FullySupervisedTrainer, LabelLeakError, SSLTrainer, untrained_parameters
from .cass import CASSTrainer
from .cross_teaching import (
    OPTIMIZER_RECIPES,
    CrossTeachingTrainer,
    cross_teaching_lr_scheduler,
    cross_teaching_optimizer,
)
from .curriculum import CurriculumTrainer, StageCosine, curriculum_epochs, parse_curriculum, stage_ends
from .dino import DINOTrainer, clip_gradients, dino_param_groups
from .mean_teacher import MeanTeacherTrainer
from .moco import MoCoTrainer
from .online_pseudo_label import OnlinePseudoLabelTrainer
from .semi_supervised import SemiSupervisedTrainer
from .simclr import SimCLRTrainer
from .src_mt import SRCMTTrainer
from .srcl import SRCLTrainer

__all__ = [
    "CASSTrainer",
    "CrossTeachingTrainer",
    "CurriculumTrainer",
    "StageCosine",
    "curriculum_epochs",
    "parse_curriculum",
    "stage_ends",
    "OPTIMIZER_RECIPES",
    "cross_teaching_lr_scheduler",
    "cross_teaching_optimizer",
    "DINOTrainer",
    "FullySupervisedTrainer",
    "clip_gradients",
    "dino_param_groups",
    "Keys",
    "LabelLeakError",
    "MeanTeacherTrainer",
    "MoCoTrainer",
    "OnlinePseudoLabelTrainer",
    "SRCLTrainer",
    "SRCMTTrainer",
    "SSLTrainer",
    "SemiSupervisedTrainer",
    "SimCLRTrainer",
    "untrained_parameters",
]
