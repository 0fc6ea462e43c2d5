"""Consistency losses between a student's and a teacher's predictions (and, SRC-MT, their sample relations)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from s4mi.losses.targets import check_activation, confidence, probabilities, pseudo_label_targets

__all__ = [
    "ConsistencyMSELoss",
    "RelationConsistencyLoss",
    "SoftDiceConsistencyLoss",
    "relation_consistency_loss",
    "relation_matrix",
    "softmax_mse_loss",
]


def _check_shapes(logits_s: torch.Tensor, logits_t: torch.Tensor) -> None:
    if logits_s.shape != logits_t.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(logits_s.shape)} vs {tuple(logits_t.shape)}"
        )


def softmax_mse_loss(logits_s: torch.Tensor, logits_t: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Mean squared error between student and teacher probabilities (Tarvainen & Valpola 2017, eq. 1).

    The mean runs over every element (batch, classes and, for segmentation, voxels), as in the authors' code
    (``F.mse_loss`` on softmax outputs). The teacher side is detached: it is a target, never trained through.

    Args:
        logits_s: student logits, ``B C[ H W[ D]]``.
        logits_t: teacher logits, same shape.
        activation: ``softmax`` or ``sigmoid``.

    Returns:
        scalar loss.
    """
    _check_shapes(logits_s, logits_t)
    return F.mse_loss(probabilities(logits_s, activation), probabilities(logits_t.detach(), activation))


class ConsistencyMSELoss(torch.nn.Module):
    """Module form of :func:`softmax_mse_loss`, for bundle configs, with an optional confidence mask.

    With ``threshold``, only the teacher's confident outputs count: per element for ``sigmoid`` (each finding of
    each image: ``max(q, 1 - q) >= threshold``), per image or voxel for ``softmax`` (top class probability
    ``>= threshold``). Masked terms contribute 0 and the mean still runs over every element, as FixMatch averages
    its masked loss over the whole batch, so the weight of the term means the same with and without a mask.
    Mean Teacher has no mask; it is an option for targets the teacher is unsure of.

    Args:
        activation: ``softmax`` or ``sigmoid``.
        threshold: optional confidence threshold in ``[0.5, 1]`` for sigmoid, ``[0, 1]`` for softmax.
    """

    def __init__(self, activation: str = "softmax", threshold: float | None = None) -> None:
        super().__init__()
        check_activation(activation)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.activation, self.threshold = activation, threshold

    def forward(self, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return softmax_mse_loss(logits_s, logits_t, self.activation)
        _check_shapes(logits_s, logits_t)
        p_s = probabilities(logits_s.float(), self.activation)
        p_t = probabilities(logits_t.detach().float(), self.activation)
        mask = confidence(p_t, self.activation) >= self.threshold  # per element for sigmoid, per voxel for softmax
        return ((p_s - p_t) ** 2 * mask).mean()


class SoftDiceConsistencyLoss(torch.nn.Module):
    r"""Dice between a student's probabilities and a teacher's (soft or hard) pseudo labels.

    Online pseudo-labelling with momentum teachers (Pham Van et al. 2022) trains the student on unlabelled images
    with ``Dice(student(u), teacher(u))``, the teacher's map being a soft target. Per class :math:`c`

    .. math:: 1 - \frac{2 \sum_i m_i p_{ic} q_{ic} + s}{\sum_i m_i p_{ic} + \sum_i m_i q_{ic} + s}

    with :math:`p` the student's probabilities, :math:`q` the detached targets, :math:`m` the confidence mask
    (1 without a threshold) and the sums over voxels (and the batch with ``batch=True``, as in the paper's code,
    which aggregates over the batch), averaged over classes (and images with ``batch=False``).

    The Dice itself is MONAI's :class:`monai.losses.MaskedDiceLoss`; this class adds the student activation, the
    teacher-side target (soft, hard, thresholded) and the detach, which MONAI's losses leave to the caller.

    Args:
        activation: ``"sigmoid"`` (one channel per structure, the paper's binary polyp map) or ``"softmax"``.
        hard: hard pseudo labels instead of soft ones (see :func:`pseudo_label_targets`).
        threshold: optional confidence threshold; masked voxels count neither in the numerator nor denominator.
        include_background: include channel 0 (set False for softmax outputs whose channel 0 is background).
        batch: sum over the batch before the ratio.
        smooth: added to numerator and denominator.
    """

    def __init__(
        self,
        activation: str = "sigmoid",
        hard: bool = False,
        threshold: float | None = None,
        include_background: bool = True,
        batch: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        check_activation(activation)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        from monai.losses import DiceLoss, MaskedDiceLoss

        self.activation, self.hard, self.threshold = activation, hard, threshold
        kwargs: dict[str, Any] = {
            "include_background": include_background,
            "batch": batch,
            "smooth_nr": smooth,
            "smooth_dr": smooth,
        }
        self.dice = DiceLoss(**kwargs)
        self.masked_dice = MaskedDiceLoss(**kwargs)

    def forward(self, logits_s: torch.Tensor, probs_t: torch.Tensor) -> torch.Tensor:
        """Args: student logits and teacher probabilities, both ``B C[ H W[ D]]``. Returns a scalar."""
        if logits_s.shape != probs_t.shape:
            raise ValueError(
                f"student logits {tuple(logits_s.shape)} and teacher probabilities {tuple(probs_t.shape)} differ"
            )
        target, mask = pseudo_label_targets(probs_t, self.activation, self.hard, self.threshold)
        probs_s = probabilities(logits_s.float(), self.activation)
        return self.dice(probs_s, target) if mask is None else self.masked_dice(probs_s, target, mask=mask)


def relation_matrix(feats: torch.Tensor) -> torch.Tensor:
    r"""SRC-MT's sample relation matrix: the Gram matrix of a batch's features with each row L2-normalised.

    .. math:: G = A A^\top, \qquad \tilde G_{ij} = G_{ij} / \lVert G_{i \cdot} \rVert_2

    Args:
        feats: ``A``, ``B D`` (or ``B D[ ...]``, flattened to ``B x (D ...)``), e.g. a classifier's pooled penultimate
            features.

    Returns:
        ``B B``, each row of unit norm (a zero row stays zero), in the dtype of ``feats``: autocast is switched off
        here, since a float16 Gram matrix (relative error ~1e-3) would drown the small student-teacher differences
        the relation loss is made of.
    """
    a = feats.flatten(1)
    with torch.autocast(a.device.type, enabled=False):
        return F.normalize(a @ a.T, dim=1)


def relation_consistency_loss(
    feats_s: torch.Tensor, feats_t: torch.Tensor, reduction: Literal["mean", "srcmt"] = "mean"
) -> torch.Tensor:
    r"""Sample relation consistency (Liu et al., "Semi-supervised Medical Image Classification with
    Relation-driven Self-ensembling Model", IEEE TMI 2020): the squared difference between the student's and
    the teacher's relation matrices (:func:`relation_matrix`) of the same batch.

    .. math:: \mathcal{L}_{src} = \frac{1}{B^2} \sum_{i,j} \big(\tilde G^s_{ij} - \tilde G^t_{ij}\big)^2

    It asks the student to keep the teacher's picture of which images of the batch resemble which, not each
    image's features themselves. The teacher side is detached (a target).

    Args:
        feats_s: student features, ``B D``.
        feats_t: teacher features of the same images (another view of each), ``B D``.
        reduction: ``"mean"``: the mean over the ``B x B`` entries (an MSE, as above); ``"srcmt"``: their sum
            divided by ``B`` (``torch.sum(relation_mse_loss(...)) / batch_size`` in the authors' code,
            liuquande/SRC-MT ``train_SRC_MT.py``), which is ``B`` times the mean, so that weight 1 is the
            paper's ``consistency_relation_weight`` 1.

    Returns:
        scalar loss.

    Raises:
        ValueError: the two feature batches differ in shape, or ``reduction`` is unknown.
    """
    if feats_s.shape != feats_t.shape:
        raise ValueError(
            f"student and teacher features differ in shape: {tuple(feats_s.shape)} vs {tuple(feats_t.shape)}"
        )
    if reduction not in ("mean", "srcmt"):
        raise ValueError(f"reduction must be 'mean' or 'srcmt', got {reduction!r}")
    loss = F.mse_loss(relation_matrix(feats_s), relation_matrix(feats_t.detach()))
    return loss * feats_s.shape[0] if reduction == "srcmt" else loss


class RelationConsistencyLoss(torch.nn.Module):
    """Module form of :func:`relation_consistency_loss`, for bundle configs.

    Args:
        reduction: ``"mean"`` (an MSE over the ``B x B`` relation entries) or ``"srcmt"`` (their sum divided by
            ``B``, the authors' code).
    """

    def __init__(self, reduction: Literal["mean", "srcmt"] = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "srcmt"):
            raise ValueError(f"reduction must be 'mean' or 'srcmt', got {reduction!r}")
        self.reduction: Literal["mean", "srcmt"] = reduction

    def forward(self, feats_s: torch.Tensor, feats_t: torch.Tensor) -> torch.Tensor:
        """Args: student and teacher features, ``B D`` each. Returns a scalar."""
        return relation_consistency_loss(feats_s.float(), feats_t.float(), self.reduction)
