"""Multi-label BCE that ignores unknown labels (CheXpert's U-Ignore policy writes them as -1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MaskedBCEWithLogitsLoss"]


class MaskedBCEWithLogitsLoss(torch.nn.Module):
    """``BCEWithLogitsLoss`` averaged over the known labels only: targets below 0 (``-1``, unknown) are skipped.

    With every label known it equals ``torch.nn.BCEWithLogitsLoss()``. PyTorch's loss has no ignore index for
    binary targets, and a ``weight`` mask would still count masked entries in the mean. A batch with no known label
    gives 0 (with a gradient of 0), not NaN.

    Args:
        pos_weight: optional per-class weight of positives, as in ``BCEWithLogitsLoss``.
    """

    pos_weight: torch.Tensor | None

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
        known = target >= 0
        per_label = F.binary_cross_entropy_with_logits(
            logits, target.clamp(min=0).to(logits.dtype), pos_weight=self.pos_weight, reduction="none"
        )
        return (per_label * known).sum() / known.sum().clamp(min=1)
