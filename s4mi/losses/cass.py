"""CASS's cross-architecture similarity loss (Singh and Cirrone, "CASS: Cross Architectural Self-Supervision for
Medical Image Analysis", arXiv 2206.04170; "Efficient Representation Learning for Healthcare with Cross-Architectural
Self-Supervision", MLHC 2023, arXiv 2301.12025)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["CASSLoss", "cass_loss"]


def cass_loss(
    x: torch.Tensor, y: torch.Tensor, reduction: Literal["mean", "sum", "none"] = "mean", eps: float = 1e-12
) -> torch.Tensor:
    r"""``2 - 2 cos(x_i, y_i)`` per sample, reduced over the batch: the functional form of :class:`CASSLoss`.

    Args:
        x: ``B D`` outputs of one network (the CNN).
        y: ``B D`` outputs of the other (the ViT).
        reduction: ``"mean"`` (CASS's) or ``"sum"`` over the batch, or ``"none"`` for the ``B`` per-sample values.
        eps: the norm floor of the L2 normalisation (``torch.nn.functional.normalize``'s).

    Returns:
        a float32 scalar, or ``B`` values with ``reduction="none"``; each in ``[0, 4]`` (0 for parallel outputs, 4
        for opposite ones).

    Raises:
        ValueError: if the shapes differ or are not ``B D``, or ``reduction`` is unknown.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two B x D outputs of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.float(), y.float()  # the normalisation in float32 under AMP
    per_sample = 2.0 - 2.0 * (F.normalize(x, dim=-1, eps=eps) * F.normalize(y, dim=-1, eps=eps)).sum(dim=-1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class CASSLoss(torch.nn.Module):
    r"""CASS's loss between a CNN's and a ViT's outputs for the same image: one minus their cosine, doubled.

    .. math:: L = \frac{1}{B} \sum_i \Big(2 - 2\,\frac{x_i \cdot y_i}{\lVert x_i \rVert \lVert y_i \rVert}\Big)
              = \frac{1}{B} \sum_i \lVert \hat x_i - \hat y_i \rVert^2

    with :math:`\hat x = x / \lVert x \rVert` (BYOL's normalised MSE, here between two architectures instead of an
    online and a target network). It is symmetric and detaches neither side: both networks learn from the one loss.
    That is what the authors' code does (github pranavsinghps1/CASS, ``CASS.ipynb`` at commit 9323e86, cell 20
    ``loss_fn``: both outputs L2-normalised, ``2 - 2 * (x * y).sum(dim=-1)``; cell 18 ``ssl_train_model``:
    ``loss = loss_fn(pred_vit, pred_cnn).mean()``, one ``loss.backward()``, then each network's optimizer steps).
    There is no stop-gradient, no predictor and no second, swapped term: the two networks' losses are the same
    number, so summing "the CNN's" and "the ViT's" loss would only double the learning rate.

    Hand-written because neither MONAI nor Ignite has it (``torch.nn.CosineEmbeddingLoss`` with target 1 gives
    ``1 - cos``, half this loss, but checks a target tensor per sample).

    Args:
        reduction: ``"mean"`` over the batch (CASS's), ``"sum"``, or ``"none"`` (``B`` values).
        eps: the norm floor of the L2 normalisation.
    """

    def __init__(self, reduction: Literal["mean", "sum", "none"] = "mean", eps: float = 1e-12) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction: Literal["mean", "sum", "none"] = reduction
        self.eps = float(eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``B D`` CNN outputs.
            y: ``B D`` ViT outputs.

        Returns:
            the loss (a scalar, or ``B`` values with ``reduction="none"``).
        """
        return cass_loss(x, y, reduction=self.reduction, eps=self.eps)
