"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): consistency between a student and its EMA teacher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from s4mi.engines.semi_supervised import SemiSupervisedTrainer
from s4mi.keys import Keys
from s4mi.losses.consistency import softmax_mse_loss

__all__ = ["MeanTeacherTrainer"]


class MeanTeacherTrainer(SemiSupervisedTrainer):
    """Mean Teacher for classification and segmentation, 2D and 3D.

    Per iteration (Tarvainen & Valpola 2017, Algorithm 1; the S2MTS2 and SRC-MT fine-tuning loss):

    1. ``logits_lb, logits_ulb_s = student(x_lb), student(x_ulb_s)`` (one forward over both when shapes match,
       so batch norm sees labelled and unlabelled images together, as in the reference implementations);
    2. ``logits_ulb_t = teacher(x_ulb_w)`` without gradients;
    3. ``loss_sup = loss_function(logits_lb, y_lb)`` (BCE multi-label, CE multi-class, Dice+CE segmentation);
    4. ``loss_unsup = MSE(act(logits_ulb_s), act(logits_ulb_t))`` with ``act`` softmax or sigmoid, voxel-wise
       for segmentation;
    5. ``loss = loss_sup + w(t) * loss_unsup``; the teacher is then updated by its EMA handler.

    Args:
        activation: ``"softmax"`` (multi-class, segmentation) or ``"sigmoid"`` (multi-label) for the consistency.
        consistency: optional replacement for the consistency loss, ``f(logits_ulb_s, logits_ulb_t) -> scalar``.
        joint_forward: one student forward over labelled and strong unlabelled images when their shapes match.
        args, kwargs: those of :class:`s4mi.engines.SemiSupervisedTrainer`; ``teachers`` must hold one teacher.
    """

    def __init__(
        self,
        *args: Any,
        activation: str = "softmax",
        consistency: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        joint_forward: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if len(self.teachers) != 1:
            raise ValueError(f"Mean Teacher needs exactly one teacher, got {len(self.teachers)}")
        self.activation = activation
        self.consistency = consistency
        self.joint_forward = joint_forward

    def train_step(self, engine: SemiSupervisedTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_lb, x_ulb_w, x_ulb_s = batch[Keys.X_LB], batch[Keys.X_ULB_W], batch[Keys.X_ULB_S]
        logits_lb, logits_ulb_s = engine.student_forward(x_lb, x_ulb_s, self.joint_forward)
        logits_ulb_t = engine.teacher_forward(engine.teacher, x_ulb_w)
        self.put_logits(engine, logits_lb, logits_ulb_s, logits_ulb_t)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.set_losses(
            self.supervised_loss(engine, logits_lb, batch), self.consistency_loss(logits_ulb_s, logits_ulb_t)
        )

    @staticmethod
    def put_logits(
        engine: SemiSupervisedTrainer, logits_lb: torch.Tensor, logits_ulb_s: torch.Tensor, logits_ulb_t: torch.Tensor
    ) -> None:
        """The iteration's logits in ``engine.state.output`` (``pred``: the labelled ones, for MONAI's handlers)."""
        engine.state.output.update(
            {
                Keys.PRED: logits_lb,
                Keys.LOGITS_LB: logits_lb,
                Keys.LOGITS_ULB_S: logits_ulb_s,
                Keys.LOGITS_ULB_T: logits_ulb_t,
            }
        )

    @staticmethod
    def supervised_loss(
        engine: SemiSupervisedTrainer, logits_lb: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``loss_function(logits_lb, y_lb)``, averaged."""
        return engine.loss_function(logits_lb, batch[Keys.Y_LB]).mean()

    def consistency_loss(self, logits_ulb_s: torch.Tensor, logits_ulb_t: torch.Tensor) -> torch.Tensor:
        """The student-teacher consistency: ``consistency`` if given, else the MSE of their probabilities."""
        if self.consistency is not None:
            return self.consistency(logits_ulb_s, logits_ulb_t)
        return softmax_mse_loss(logits_ulb_s.float(), logits_ulb_t.float(), self.activation)
