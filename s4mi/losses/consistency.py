"""Consistency losses between a student's and a teacher's predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["probabilities", "softmax_mse_loss", "ConsistencyMSELoss"]


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """``softmax`` over channels (multi-class, segmentation) or element-wise ``sigmoid`` (multi-label)."""
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")


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
    if logits_s.shape != logits_t.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(logits_s.shape)} vs {tuple(logits_t.shape)}"
        )
    return F.mse_loss(probabilities(logits_s, activation), probabilities(logits_t.detach(), activation))


class ConsistencyMSELoss(torch.nn.Module):
    """Module form of :func:`softmax_mse_loss`, for bundle configs."""

    def __init__(self, activation: str = "softmax") -> None:
        super().__init__()
        probabilities(torch.zeros(1, 1), activation)  # validate early
        self.activation = activation

    def forward(self, logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        return softmax_mse_loss(logits_s, logits_t, self.activation)
