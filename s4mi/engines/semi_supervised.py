"""The teacher-student training engine that every semi-supervised method in s4mi runs on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer

from s4mi.engines.base import LabelLeakError, SSLTrainer
from s4mi.keys import Keys

if TYPE_CHECKING:
    from s4mi.handlers.teacher import EMATeacher

__all__ = ["Keys", "LabelLeakError", "SemiSupervisedTrainer"]


class SemiSupervisedTrainer(SSLTrainer):
    """The teacher-student trainer: each iteration takes a labelled and an unlabelled batch (an :class:`SSLTrainer`).

    1. split ``{"labeled": ..., "unlabeled": ...}`` into x_lb, y_lb, x_ulb_w (weak view) and x_ulb_s (strong view),
       refusing an unlabelled batch that holds a label key;
    2. :meth:`train_step` (the method's maths) fills ``engine.state.output`` with logits and losses and fires
       ``FORWARD_COMPLETED`` and ``LOSS_COMPLETED``;
    3. backward, optimizer step and MONAI's events: :class:`SSLTrainer`.

    The unlabelled-loss weight is ``engine.state.unsup_weight``:
    a constant, or a :class:`s4mi.handlers.ramps.Ramp` driven per iteration or epoch by Ignite's state scheduler.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: yields ``{"labeled": batch, "unlabeled": batch}``, e.g. :class:`s4mi.data.loaders.SemiSupervisedLoader`.
        network: the student.
        optimizer: optimizer of the student.
        loss_function: supervised loss on labelled data (``logits_lb``, ``y_lb``).
        teachers: EMA teachers by name, or a sequence of them (named by their own ``name``).
        unsup_weight: weight of the unlabelled loss, a float or a ramp of the step.
        unsup_weight_every: ``"iteration"`` or ``"epoch"``: what the ramp counts.
        image_key: image key in both batches (the weak view in the unlabelled one).
        label_key: label key of the labelled batch.
        strong_key: key of the strong view in the unlabelled batch.
        teacher_train_mode: run teachers in train mode (batch-norm statistics of the batch, dropout) as the
            original Mean Teacher code does; default eval mode.
        kwargs: the rest of :class:`SSLTrainer`'s and :class:`monai.engines.SupervisedTrainer`'s arguments
            (``epoch_length``, ``inferer``, ``train_handlers``, ``amp``, ``accumulation_steps``, ``prepare_batch``,
            ``to_kwargs``, ``compile``, ...).
    """

    #: whether the unlabelled batch must hold a strong view (``strong_key``) besides the weak one
    needs_strong_view: bool = True

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        teachers: Mapping[str, EMATeacher] | Sequence[EMATeacher] | None = None,
        unsup_weight: float | Callable[[int], float] = 1.0,
        unsup_weight_every: Literal["iteration", "epoch"] = "iteration",
        image_key: str = "image",
        label_key: str = "label",
        strong_key: str = "image_s",
        teacher_train_mode: bool = False,
        inferer: Inferer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=teachers,
            teacher_train_mode=teacher_train_mode,
            inferer=inferer,
            **kwargs,
        )
        self.image_key, self.label_key, self.strong_key = image_key, label_key, strong_key
        self.schedule(Keys.UNSUP_WEIGHT, unsup_weight, every=unsup_weight_every)

    @property
    def unsup_weight_scheduler(self) -> Any:
        """The ramp scheduler of the unlabelled weight (``None`` for a constant weight)."""
        return self.schedulers.get(Keys.UNSUP_WEIGHT)

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"labeled", "unlabeled"}`` -> x_lb, y_lb, x_ulb_w, x_ulb_s on the device.

        Raises:
            KeyError: a stream or key is missing.
            LabelLeakError: the unlabelled batch holds a label key.
        """
        missing = [k for k in ("labeled", "unlabeled") if k not in batchdata]
        if missing:
            raise KeyError(f"{type(self).__name__} needs batches of {{'labeled', 'unlabeled'}}, missing {missing}")
        lb, ulb = batchdata["labeled"], batchdata["unlabeled"]
        self.refuse_labels(ulb, "unlabelled", extra=(self.label_key,))
        if self.needs_strong_view and self.strong_key not in ulb:
            raise KeyError(f"the unlabeled batch lacks key(s) {[self.strong_key]} (has {sorted(ulb)})")
        x_lb, y_lb = self.prepare_stream(lb, self.image_key, self.label_key, "labeled")
        assert y_lb is not None
        x_ulb_w, _ = self.prepare_stream(ulb, self.image_key, None, "unlabeled")
        # a method that does not need two views (one augmented view for teacher and student) may omit the strong one
        x_ulb_s = self.to_device(ulb[self.strong_key]) if self.strong_key in ulb else x_ulb_w
        # one look at the first batch of a run is enough to catch a pipeline that never augments the strong view
        if self.needs_strong_view and self.state.iteration <= 1 and torch.equal(x_ulb_w, x_ulb_s):
            warnings.warn(
                "the weak and strong unlabelled views are identical in this batch: check that the strong view is "
                "augmented (a consistency loss between two identical inputs is about zero)",
                stacklevel=2,
            )
        return {Keys.X_LB: x_lb, Keys.Y_LB: y_lb, Keys.X_ULB_W: x_ulb_w, Keys.X_ULB_S: x_ulb_s}

    def student_forward(
        self, x_lb: torch.Tensor, x_ulb: torch.Tensor, joint: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the labelled and unlabelled images: one forward over both when ``joint`` and their
        shapes match (batch norm then sees them together, as in the reference implementations), else two."""
        logits_lb, logits_ulb = self.student_forward_all([x_lb, x_ulb], joint)
        return logits_lb, logits_ulb

    def student_forward_all(self, xs: Sequence[torch.Tensor], joint: bool = True) -> list[torch.Tensor]:
        """Student outputs of several batches, in order: one forward over their concatenation when ``joint`` and
        their shapes (but the batch size) match, else one forward each."""
        if joint and all(x.shape[1:] == xs[0].shape[1:] for x in xs):
            out = self.inferer(torch.cat(list(xs)), self.network)
            return list(out.split([x.shape[0] for x in xs]))
        return [self.inferer(x, self.network) for x in xs]

    def set_losses(self, loss_sup: torch.Tensor, loss_unsup: torch.Tensor) -> None:
        """Put ``loss = loss_sup + w * loss_unsup`` (``w``: the current unlabelled weight) and its parts in the
        output, then fire ``LOSS_COMPLETED``."""
        self.set_loss_terms(loss_sup, {Keys.LOSS_UNSUP: (loss_unsup, Keys.UNSUP_WEIGHT)})

    def set_loss_terms(self, loss_sup: torch.Tensor, terms: Mapping[str, tuple[torch.Tensor, str]]) -> None:
        """Put ``loss = loss_sup + sum_k w_k * term_k`` and its parts in the output, then fire ``LOSS_COMPLETED``.

        Args:
            loss_sup: the supervised loss.
            terms: output key of each unlabelled term -> ``(term, name of its weight)``, the weight being one set up
                by :meth:`schedule` (``unsup_weight`` ...); each term and its current weight go in the output.
        """
        out: dict[str, Any] = {Keys.LOSS_SUP: loss_sup}
        loss = loss_sup
        for key, (term, weight_name) in terms.items():
            weight = self.scheduled(weight_name)
            out.update({key: term, weight_name: weight})
            loss = loss + weight * term
        out[Keys.LOSS] = loss
        self.state.output.update(out)
        self.fire_event(IterationEvents.LOSS_COMPLETED)

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """MONAI's ``image`` and ``label`` keys: the labelled batch."""
        return {Keys.IMAGE: batch[Keys.X_LB], Keys.LABEL: batch[Keys.Y_LB]}
