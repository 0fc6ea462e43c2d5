"""SRCL, joint mode (Purpura-Pontoniere et al., arXiv 2304.05047): SRC-MT plus a contrastive loss in every step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from monai.engines.utils import IterationEvents
from monai.losses import ContrastiveLoss
from torch import nn

from s4mi.engines.base import untrained_parameters
from s4mi.engines.semi_supervised import SemiSupervisedTrainer
from s4mi.engines.src_mt import SRCMTTrainer
from s4mi.keys import Keys
from s4mi.networks.features import capture_outputs

__all__ = ["SRCLTrainer"]


class SRCLTrainer(SRCMTTrainer):
    r"""SRCL, joint learning of the diagnostic task and a contrastive pretext task on top of SRC-MT.

    Purpura-Pontoniere, Terzopoulos, Wang, Imran, "Semi-Supervised Relational Contrastive Learning", arXiv
    2304.05047, which publishes no code: the contrastive term here is SimCLR's NT-Xent on two views of each image
    through a projection head (Chen et al., ICML 2020), the paper's most likely reading. Per iteration:

    1. one student forward over ``[x_lb, x_ulb_s, x_ulb_w, x_lb_s]`` (batch norm sees all of them), keeping the
       logits and the penultimate features ``A`` (``B D``) of each part (a hook on ``feature_layer``);
    2. ``logits_ulb_t, A_t = teacher(x_ulb_w)`` without gradients;
    3. ``loss_sup``, ``loss_unsup`` (softmax MSE) and ``loss_relation`` (SRC-MT's relation MSE between ``A`` of
       ``x_ulb_s`` and ``A_t``) as :class:`SRCMTTrainer`;
    4. ``z_1 = head(A[x_lb, x_ulb_w])``, ``z_2 = head(A[x_lb_s, x_ulb_s])``: the two views of every image (the
       unlabelled images' weak and strong views; the labelled images' own and a strong view, ``strong_key`` in the
       labelled batch) through the projection head, in one call;
    5. ``loss_contrastive = NT-Xent(z_1, z_2)`` with in-batch negatives (:class:`monai.losses.ContrastiveLoss`,
       which is SimCLR's loss; ``contrastive_loss`` replaces it);
    6. ``loss = loss_sup + w(t) loss_unsup + w_rel(t) loss_relation + w_con(t) loss_contrastive``, each weight a
       constant or a ramp; the teacher is then updated by its EMA handler.

    With ``contrast_labeled=False`` only the unlabelled images' two views are contrasted (and the labelled batch
    needs no strong view). Under DDP the negatives are those of each rank's batch (no gather across ranks).

    Args:
        head: the projection head, ``B D -> B D'`` (e.g. :class:`s4mi.networks.ProjectionHead`); it trains with the
            student, so ``optimizer`` must hold its parameters. ``DistributedDataParallel`` around it under DDP.
        contrastive_loss: ``f(z_1, z_2) -> scalar``; default ``monai.losses.ContrastiveLoss(temperature)``.
        temperature: NT-Xent's temperature when ``contrastive_loss`` is not given (0.5: SimCLR's for small batches).
        contrastive_weight: the contrastive term's weight, a float or a ramp (``engine.state.contrastive_weight``).
        contrastive_weight_every: what its ramp counts, ``"iteration"`` or ``"epoch"``.
        contrast_labeled: contrast the labelled images' two views as well (the paper: "unlabelled (and labelled)").
        args, kwargs: those of :class:`SRCMTTrainer` (``optimizer``, ``relation_weight``, ``feature_layer`` ...).

    Raises:
        ValueError: ``optimizer`` leaves out a trainable parameter of ``head``.
    """

    def __init__(
        self,
        *args: Any,
        head: nn.Module,
        contrastive_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        temperature: float = 0.5,
        contrastive_weight: float | Callable[[int], float] = 1.0,
        contrastive_weight_every: Literal["iteration", "epoch"] = "epoch",
        contrast_labeled: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        untrained = untrained_parameters(head, self.optimizer)
        if untrained:
            raise ValueError(
                f"the optimizer leaves out {len(untrained)} trainable parameter(s) of the projection head, e.g. "
                f"{untrained[:3]}: SRCL trains it with the student (give the optimizer both parameter lists)"
            )
        self.head = head
        self.contrastive_loss = ContrastiveLoss(temperature) if contrastive_loss is None else contrastive_loss
        self.contrast_labeled = contrast_labeled
        self.schedule(Keys.CONTRASTIVE_WEIGHT, contrastive_weight, every=contrastive_weight_every)

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """:meth:`SemiSupervisedTrainer.split_batch`, plus the labelled strong view ``x_lb_s`` when
        ``contrast_labeled``.

        Raises:
            KeyError: the labelled batch lacks ``strong_key`` (the message says how to do without).
        """
        batch = super().split_batch(batchdata)
        if self.contrast_labeled:
            lb = batchdata["labeled"]
            if self.strong_key not in lb:
                raise KeyError(
                    f"the labeled batch lacks key {self.strong_key!r}, the second view SRCL contrasts (has "
                    f"{sorted(lb)}); add it to the labelled transforms, or set contrast_labeled=False"
                )
            batch[Keys.X_LB_S] = self.to_device(lb[self.strong_key])
        return batch

    def train_step(self, engine: SemiSupervisedTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_lb, x_ulb_w, x_ulb_s = batch[Keys.X_LB], batch[Keys.X_ULB_W], batch[Keys.X_ULB_S]
        xs = [x_lb, x_ulb_s, x_ulb_w] + ([batch[Keys.X_LB_S]] if self.contrast_labeled else [])
        sizes = [x.shape[0] for x in xs]
        with capture_outputs(engine.network, self.feature_layer) as captured:
            logits_lb, logits_ulb_s, *_ = engine.student_forward_all(xs, self.joint_forward)
        a_lb, a_ulb_s, a_ulb_w, *a_lb_s = self.rows(captured, sum(sizes)).split(sizes)
        logits_ulb_t, feats_ulb_t = self.teacher_logits_and_features(engine, x_ulb_w)
        # view 1: the images as the student and teacher see them; view 2: their strong views
        a_1 = torch.cat([a_lb, a_ulb_w]) if self.contrast_labeled else a_ulb_w
        z_1, z_2 = self.head(torch.cat([a_1, *a_lb_s, a_ulb_s])).chunk(2)
        self.put_logits(engine, logits_lb, logits_ulb_s, logits_ulb_t)
        engine.state.output.update(
            {Keys.FEATS_ULB_S: a_ulb_s, Keys.FEATS_ULB_T: feats_ulb_t, Keys.Z_1: z_1, Keys.Z_2: z_2}
        )
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = self.unlabelled_terms(logits_ulb_s, logits_ulb_t, a_ulb_s, feats_ulb_t)
        terms[Keys.LOSS_CONTRASTIVE] = (self.contrastive_loss(z_1.float(), z_2.float()), Keys.CONTRASTIVE_WEIGHT)
        engine.set_loss_terms(self.supervised_loss(engine, logits_lb, batch), terms)
