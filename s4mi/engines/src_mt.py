"""SRC-MT (Liu et al., IEEE TMI 2020): Mean Teacher plus consistency of the sample relations within a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from monai.engines.utils import IterationEvents

from s4mi.engines.mean_teacher import MeanTeacherTrainer
from s4mi.engines.semi_supervised import SemiSupervisedTrainer
from s4mi.keys import Keys
from s4mi.losses.consistency import relation_consistency_loss
from s4mi.networks.features import DENSENET_PENULTIMATE, capture_outputs

__all__ = ["SRCMTTrainer"]


class SRCMTTrainer(MeanTeacherTrainer):
    r"""SRC-MT: a Mean Teacher whose student also keeps the teacher's relations between the images of a batch.

    Liu, Yu, Yang, Heng, "Semi-supervised Medical Image Classification with Relation-driven Self-ensembling Model",
    IEEE TMI 2020 (arXiv 2005.07377); code liuquande/SRC-MT, ``train_SRC_MT.py``. Per iteration:

    1. ``logits_lb, logits_ulb_s = student(x_lb), student(x_ulb_s)``, one forward (as
       :class:`MeanTeacherTrainer`), with the penultimate features ``A_s`` (``B D``) of the unlabelled images
       recorded in the same forward (a hook on ``feature_layer``, :func:`s4mi.networks.capture_outputs`);
    2. ``logits_ulb_t, A_t = teacher(x_ulb_w)`` without gradients, the same way;
    3. ``loss_sup = loss_function(logits_lb, y_lb)``;
    4. ``loss_unsup = MSE(softmax(logits_ulb_s), softmax(logits_ulb_t))`` (the Mean Teacher consistency);
    5. ``loss_relation = relation(A_s, A_t)``: the MSE between the row-normalised Gram matrices ``A A^T`` of
       student and teacher (:func:`s4mi.losses.relation_consistency_loss`);
    6. ``loss = loss_sup + w(t) loss_unsup + w_rel(t) loss_relation``; the teacher is then updated by its EMA
       handler (SRC-MT: ``m = 0.99`` with the warm-up ``min(1 - 1/(t+1), m)``, ``warmup="srcmt"``).

    SRC-MT's schedule is ``w(t) = exp(-5 (1 - t/30)^2)`` by epoch for both weights, the unlabelled terms added only
    after epoch 20 of 100: give ``unsup_weight`` and ``relation_weight`` a
    ``GatedRamp(SigmoidRamp(w, 30), on_from=21)`` each, by epoch (:mod:`s4mi.handlers.ramps`). Differences from
    the authors' code, kept on purpose: the consistency and relation terms are over the unlabelled batch (the code
    computes them over the whole batch, labelled images included, whose two views the student and teacher see);
    the consistency MSE has no class weights (the code multiplies it by ``10000 / n_class``).

    Args:
        relation: replacement for the relation loss, ``f(A_s, A_t) -> scalar`` (e.g.
            :class:`s4mi.losses.RelationConsistencyLoss` with ``reduction="srcmt"``); default the mean over the
            ``B x B`` entries.
        relation_weight: the relation term's weight, a float or a ramp (``engine.state.relation_weight``).
        relation_weight_every: what its ramp counts, ``"iteration"`` or ``"epoch"``.
        feature_layer: the submodule of the student (and so of the teacher) whose output is ``A``; the pooled
            features of a MONAI DenseNet by default.
        args, kwargs: those of :class:`MeanTeacherTrainer` (``unsup_weight`` is the consistency weight).
    """

    def __init__(
        self,
        *args: Any,
        relation: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        relation_weight: float | Callable[[int], float] = 1.0,
        relation_weight_every: Literal["iteration", "epoch"] = "epoch",
        feature_layer: str = DENSENET_PENULTIMATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.relation = relation
        self.feature_layer = feature_layer
        self.schedule(Keys.RELATION_WEIGHT, relation_weight, every=relation_weight_every)

    def train_step(self, engine: SemiSupervisedTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_lb, x_ulb_w, x_ulb_s = batch[Keys.X_LB], batch[Keys.X_ULB_W], batch[Keys.X_ULB_S]
        with capture_outputs(engine.network, self.feature_layer) as feats_s:
            logits_lb, logits_ulb_s = engine.student_forward(x_lb, x_ulb_s, self.joint_forward)
        logits_ulb_t, feats_ulb_t = self.teacher_logits_and_features(engine, x_ulb_w)
        self.put_logits(engine, logits_lb, logits_ulb_s, logits_ulb_t)
        feats_ulb_s = self.rows(feats_s, x_lb.shape[0] + x_ulb_s.shape[0])[x_lb.shape[0] :]
        engine.state.output.update({Keys.FEATS_ULB_S: feats_ulb_s, Keys.FEATS_ULB_T: feats_ulb_t})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.set_loss_terms(
            self.supervised_loss(engine, logits_lb, batch),
            self.unlabelled_terms(logits_ulb_s, logits_ulb_t, feats_ulb_s, feats_ulb_t),
        )

    def teacher_logits_and_features(
        self, engine: SemiSupervisedTrainer, x_ulb_w: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's logits of the weak views and its features ``A_t``, from one forward without gradients."""
        with capture_outputs(engine.teacher, self.feature_layer) as feats_t:
            logits_ulb_t = engine.teacher_forward(engine.teacher, x_ulb_w)
        return logits_ulb_t, self.rows(feats_t, x_ulb_w.shape[0])

    def rows(self, captured: list[torch.Tensor], n: int) -> torch.Tensor:
        """The recorded features of one or more forwards as one ``n x D`` tensor, in forward order.

        Raises:
            RuntimeError: the feature layer did not give ``n`` rows (it ran a different number of times, or is not
                per image).
        """
        feats = torch.cat(captured) if captured else None
        if feats is None or feats.shape[0] != n:
            got = "nothing" if feats is None else f"{feats.shape[0]} rows"
            raise RuntimeError(
                f"feature layer {self.feature_layer!r} gave {got} for a batch of {n} images: it must run once per "
                "forward and keep one row per image (the pooled features of a classifier)"
            )
        return feats

    def unlabelled_terms(
        self,
        logits_ulb_s: torch.Tensor,
        logits_ulb_t: torch.Tensor,
        feats_ulb_s: torch.Tensor,
        feats_ulb_t: torch.Tensor,
    ) -> dict[str, tuple[torch.Tensor, str]]:
        """SRC-MT's unlabelled terms with the names of their weights, for :meth:`set_loss_terms`."""
        if self.relation is not None:
            loss_relation = self.relation(feats_ulb_s, feats_ulb_t)
        else:
            loss_relation = relation_consistency_loss(feats_ulb_s.float(), feats_ulb_t.float())
        return {
            Keys.LOSS_UNSUP: (self.consistency_loss(logits_ulb_s, logits_ulb_t), Keys.UNSUP_WEIGHT),
            Keys.LOSS_RELATION: (loss_relation, Keys.RELATION_WEIGHT),
        }
