"""Online pseudo-labelling with momentum teachers (Pham Van et al., arXiv 2209.14599): the teacher keeps learning."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from monai.engines.utils import IterationEvents

from s4mi.engines.semi_supervised import SemiSupervisedTrainer
from s4mi.keys import Keys
from s4mi.losses.consistency import SoftDiceConsistencyLoss
from s4mi.losses.targets import check_activation, probabilities
from s4mi.transforms.batch import random_crop, random_flip_rot90

if TYPE_CHECKING:
    from s4mi.handlers.pseudo_labels import PseudoLabelRenderer

__all__ = ["OnlinePseudoLabelTrainer", "student_learning_rate"]


def student_learning_rate(student_init: str, from_teacher: float = 1e-4, from_scratch: float = 1e-3) -> float:
    """The student stage's learning rate: fine-tuning a student that starts from the teacher's weights
    (``student_init="teacher"``) takes a tenth of the rate of one that starts from scratch (``"scratch"``).

    Raises:
        ValueError: any other ``student_init``.
    """
    if student_init == "teacher":
        return from_teacher
    if student_init == "scratch":
        return from_scratch
    raise ValueError(f"student_init must be 'teacher' or 'scratch', got {student_init!r}")


class OnlinePseudoLabelTrainer(SemiSupervisedTrainer):
    """Pseudo-labelling where the pseudo-label teacher is fixed (offline) or keeps learning from the student (online).

    The teacher is an :class:`s4mi.handlers.EMATeacher` of the student whose ``ema_model`` holds a network trained
    on the labelled data first (stage 0, or its momentum copy) and ``sync_on_start=False``: momentum 1 keeps it
    fixed (offline pseudo-labelling); momentum m < 1 makes it ``teacher <- m teacher + (1 - m) student`` after
    every step or epoch (online; the paper uses m = 0.99 once per epoch). The student's own momentum copy is
    another ``EMATeacher`` in ``teachers``; the paper evaluates it.

    Per iteration:

    1. ``logits_lb, logits_ulb_s = student(x_lb), student(x_u)`` in one forward when the shapes match;
    2. pseudo labels ``q``: the teacher's probabilities on the same unlabelled input (``teacher_view="strong"``,
       the paper's code: both see the strongly augmented image), or on the weak view (``"weak"``), or, with a
       :class:`s4mi.handlers.PseudoLabelRenderer`, the maps it last rendered over the whole unlabelled set,
       fetched on the device by item index (``ulb_index``) and flipped/rotated on the device together with the
       student's input (``device_augment``);
    3. ``loss = loss_function(logits_lb, y_lb) + w * consistency(logits_ulb_s, q)``, with ``w`` the unlabelled
       weight (the paper's beta = 0.3) and ``consistency`` a soft-Dice by default (soft or hard pseudo labels,
       optional confidence threshold: :class:`s4mi.losses.SoftDiceConsistencyLoss`).

    Args:
        teacher_name: the name of the pseudo-label teacher in ``teachers``.
        activation: ``"sigmoid"`` (one channel per structure, the paper) or ``"softmax"``.
        consistency: ``f(logits_ulb_s, q) -> scalar``; default ``SoftDiceConsistencyLoss(activation, hard,
            threshold)``.
        hard: hard pseudo labels (default soft, as in the paper).
        threshold: confidence threshold for the pseudo labels (default none, as in the paper).
        teacher_view: ``"strong"`` or ``"weak"``: the unlabelled view the teacher labels on the fly.
        renderer: serve pseudo labels from this renderer's cache instead of running the teacher each step.
        device_augment: with a renderer, flip/rotate the student's input and its cached pseudo label together.
        crop_size: with a renderer, first crop the student's input and its pseudo label to this random box
            together (3D: train on patches of the volumes the renderer labelled whole, with a sliding window).
        joint_forward: one student forward over labelled and unlabelled images when their shapes match.
        args, kwargs: those of :class:`s4mi.engines.SemiSupervisedTrainer`.
    """

    needs_strong_view = False

    def __init__(
        self,
        *args: Any,
        teacher_name: str = "teacher",
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
        consistency: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        hard: bool = False,
        threshold: float | None = None,
        teacher_view: Literal["strong", "weak"] = "strong",
        renderer: PseudoLabelRenderer | None = None,
        device_augment: bool = True,
        crop_size: Sequence[int] | None = None,
        joint_forward: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if teacher_name not in self.teachers:
            raise ValueError(
                f"the pseudo-label teacher {teacher_name!r} is not among the trainer's teachers {sorted(self.teachers)}"
            )
        if teacher_view not in ("strong", "weak"):
            raise ValueError(f"teacher_view must be 'strong' or 'weak', got {teacher_view!r}")
        check_activation(activation)
        self.teacher_name = teacher_name
        self.activation = activation
        self.consistency = consistency or SoftDiceConsistencyLoss(activation, hard=hard, threshold=threshold)
        self.teacher_view = teacher_view
        self.renderer = renderer
        self.device_augment = device_augment
        self.crop_size = crop_size
        self.joint_forward = joint_forward
        if renderer is not None:
            renderer.attach(self)

    @property
    def pseudo_teacher(self) -> torch.nn.Module:
        """The network that makes the pseudo labels."""
        return self.teachers[self.teacher_name].ema_model

    def split_batch(self, batchdata: Any) -> dict[str, torch.Tensor]:
        out = super().split_batch(batchdata)
        if self.renderer is not None:
            ulb = batchdata["unlabeled"]
            key = self.renderer.index_key
            if key not in ulb:
                raise KeyError(
                    f"the unlabelled batch lacks {key!r} (has {sorted(ulb)}): serving rendered pseudo labels needs "
                    "each unlabelled datalist item's index (s4mi.data.prepare.with_index)"
                )
            out[Keys.ULB_INDEX] = torch.as_tensor(ulb[key])
        return out

    def train_step(self, engine: OnlinePseudoLabelTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_lb, y_lb = batch[Keys.X_LB], batch[Keys.Y_LB]
        out = engine.state.output
        if engine.renderer is not None:
            x_u = batch[Keys.X_ULB_S]
            q = engine.renderer.lookup(batch[Keys.ULB_INDEX]).to(x_u.device, torch.float32)
            if engine.crop_size is not None:
                x_u, q = random_crop((x_u, q), engine.crop_size)
            if engine.device_augment:
                x_u, q = random_flip_rot90((x_u, q))
        else:
            x_u = batch[Keys.X_ULB_S]
            x_t = x_u if engine.teacher_view == "strong" else batch[Keys.X_ULB_W]
            logits_t = engine.teacher_forward(engine.pseudo_teacher, x_t)
            out[Keys.LOGITS_ULB_T] = logits_t
            q = probabilities(logits_t.float(), engine.activation)
        logits_lb, logits_u = engine.student_forward(x_lb, x_u, engine.joint_forward)
        out.update({Keys.PRED: logits_lb, Keys.LOGITS_LB: logits_lb, Keys.LOGITS_ULB_S: logits_u, Keys.PSEUDO_LABEL: q})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss_sup = engine.loss_function(logits_lb, y_lb).mean()
        loss_unsup = engine.consistency(logits_u.float(), q)
        engine.set_losses(loss_sup, loss_unsup)
