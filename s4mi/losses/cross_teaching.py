"""Cross teaching between a CNN and a Transformer (Luo et al., "Semi-Supervised Medical Image Segmentation via Cross
Teaching between CNN and Transformer", MIDL 2022; the S4MI benchmark's semi-supervised segmentation, Singh et al.,
arXiv 2311.10319): each network learns from the labels and from the other network's hard prediction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch import nn

__all__ = ["CrossTeachingLoss", "cross_pseudo_label"]


def cross_pseudo_label(logits: torch.Tensor) -> torch.Tensor:
    """The hard pseudo label one network gives the other: the argmax class of its logits, detached.

    Args:
        logits: ``B C H W[ D]``.

    Returns:
        ``B 1 H W[ D]`` class indices (long), no gradient.
    """
    return logits.detach().argmax(dim=1, keepdim=True)


class CrossTeachingLoss(nn.Module):
    r"""One network's cross-teaching loss: supervised on the labelled batch, taught by the other network on the
    unlabelled one.

    .. math::
        \mathcal{L} = \tfrac12\big(\mathrm{CE}_w(f(x_l), y) + \mathrm{Dice}(\sigma(f(x_l)), y)\big)
        + \lambda(t)\, \mathrm{Dice}\big(\sigma(f(x_u)), \arg\max g(x_u)\big)

    with :math:`f` this network, :math:`g` the other (its argmax detached: :func:`cross_pseudo_label`), :math:`\sigma`
    the softmax over classes and :math:`\lambda(t)` the caller's weight (``0.1 exp(-5 (1 - t/L)^2)`` by iteration:
    :class:`s4mi.handlers.ramps.SigmoidRamp`). The trainer adds this loss of the CNN and of the Transformer and takes
    one backward over the sum (SSL4MIS ``train_cross_teaching_between_cnn_transformer_2D.py``: ``loss =
    model1_loss + model2_loss``).

    The Dice is SSL4MIS's ``losses.DiceLoss``: per class :math:`1 - (2\sum pq + s) / (\sum p^2 + \sum q^2 + s)`, the
    sums running over the whole batch and every pixel, :math:`s = 10^{-5}`, averaged over all classes (background
    included). That is MONAI's :class:`~monai.losses.DiceLoss` with ``squared_pred``, ``batch`` and
    ``include_background``, used here as is. The cross-entropy is PyTorch's, with the optional class weights (S4MI's
    class-weighted CE; SSL4MIS has none); the Dice is never class-weighted, as in both.

    Args:
        class_weights: optional weight per class for the cross-entropy (``C`` values).
        sup_weight: factor of the supervised CE + Dice (0.5 in the paper).
        smooth: added to the Dice's numerator and denominator.
        squared_pred: square probabilities and targets in the Dice's denominator (SSL4MIS); False: plain sums.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        sup_weight: float = 0.5,
        smooth: float = 1e-5,
        squared_pred: bool = True,
    ) -> None:
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weight is not None and (weight.ndim != 1 or bool((weight < 0).any())):
            raise ValueError(f"class_weights must be one non-negative weight per class, got {class_weights}")
        self.ce = nn.CrossEntropyLoss(weight=weight)
        self.dice = DiceLoss(
            include_background=True,
            to_onehot_y=True,
            softmax=True,
            squared_pred=squared_pred,
            batch=True,
            smooth_nr=smooth,
            smooth_dr=smooth,
        )
        self.sup_weight = float(sup_weight)

    def supervised(self, logits_lb: torch.Tensor, y_lb: torch.Tensor) -> torch.Tensor:
        """``sup_weight * (CE_w + Dice)`` of logits ``B C H W[ D]`` against class indices ``B 1 H W[ D]``."""
        if y_lb.shape[1] != 1 or y_lb.shape[2:] != logits_lb.shape[2:]:
            raise ValueError(
                f"labels must be class indices B 1 {list(logits_lb.shape[2:])}, got {tuple(y_lb.shape)} for logits "
                f"{tuple(logits_lb.shape)}"
            )
        ce = self.ce(logits_lb, y_lb[:, 0].long())
        return self.sup_weight * (ce + self.dice(logits_lb, y_lb))

    def cross(self, logits_ulb: torch.Tensor, logits_ulb_other: torch.Tensor) -> torch.Tensor:
        """Dice of this network's softmax on the unlabelled batch against the other network's argmax (detached)."""
        if logits_ulb.shape != logits_ulb_other.shape:
            raise ValueError(
                f"the two networks' logits differ in shape: {tuple(logits_ulb.shape)} vs {tuple(logits_ulb_other.shape)}"
            )
        return self.dice(logits_ulb, cross_pseudo_label(logits_ulb_other))

    def forward(
        self,
        logits_lb: torch.Tensor,
        y_lb: torch.Tensor,
        logits_ulb: torch.Tensor,
        logits_ulb_other: torch.Tensor,
        weight: float,
    ) -> torch.Tensor:
        """This network's loss: :meth:`supervised` + ``weight`` * :meth:`cross`. Returns a scalar."""
        return self.supervised(logits_lb, y_lb) + weight * self.cross(logits_ulb, logits_ulb_other)
