"""Consistency losses between a student's and a teacher's predictions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from s4mi.losses.targets import check_activation, confidence, probabilities, pseudo_label_targets

__all__ = ["ConsistencyMSELoss", "SoftDiceConsistencyLoss", "softmax_mse_loss"]


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
