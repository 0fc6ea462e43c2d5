"""A teacher's output as a target, defined once: probabilities, per-voxel confidence, hard labels, pseudo labels.

The consistency losses (:mod:`s4mi.losses.consistency`), the pseudo-label renderer and its written files
(:class:`s4mi.handlers.PseudoLabelRenderer`) all read these, so a "confident voxel" or a "hard label" means the
same in the loss a student trains on and in the map an annotator reviews.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_activation", "confidence", "hard_labels", "probabilities", "pseudo_label_targets"]

_ACTIVATIONS = ("softmax", "sigmoid")


def check_activation(activation: str) -> str:
    """``activation`` if it is ``"softmax"`` or ``"sigmoid"``.

    Raises:
        ValueError: any other value.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    return activation


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """``softmax`` over channels (multi-class, segmentation) or element-wise ``sigmoid`` (multi-label, binary maps)."""
    if check_activation(activation) == "softmax":
        return torch.softmax(logits, dim=1)
    return torch.sigmoid(logits)


def confidence(probs: torch.Tensor, activation: str) -> torch.Tensor:
    """How sure probabilities ``B C[ *spatial]`` are: ``max(p, 1 - p)`` per channel for sigmoid (``B C ...``), the
    top class probability for softmax (``B 1 ...``)."""
    if check_activation(activation) == "sigmoid":
        return torch.maximum(probs, 1.0 - probs)
    return probs.amax(dim=1, keepdim=True)


def hard_labels(probs: torch.Tensor, activation: str, one_hot: bool = False) -> torch.Tensor:
    """Hard labels of probabilities ``B C[ *spatial]``: ``p > 0.5`` per channel for sigmoid (``B C ...``); for
    softmax the argmax class, ``B 1 ...`` class indices or, with ``one_hot``, ``B C ...`` one-hot. Same dtype as
    ``probs`` (cast for files)."""
    if check_activation(activation) == "sigmoid":
        return (probs > 0.5).to(probs.dtype)
    index = probs.argmax(dim=1, keepdim=True)
    if one_hot:
        return F.one_hot(index[:, 0], probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    return index.to(probs.dtype)


def pseudo_label_targets(
    probs_t: torch.Tensor, activation: str = "sigmoid", hard: bool = False, threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn a teacher's probabilities into pseudo-label targets and an optional per-voxel confidence mask.

    Args:
        probs_t: teacher probabilities, ``B C[ H W[ D]]`` (sigmoid per channel, or softmax over channels).
        activation: how ``probs_t`` was made: ``"sigmoid"`` or ``"softmax"``.
        hard: ``False`` keeps the soft map (the online pseudo-labelling paper's choice); ``True`` takes
            :func:`hard_labels` (one-hot for softmax).
        threshold: keep only voxels whose :func:`confidence` (its largest channel for sigmoid) is at least this;
            ``None`` keeps all. None of the papers uses one; users
            ask for it.

    Returns:
        ``(target, mask)``: the target (same shape as ``probs_t``, detached) and a ``B 1[ H W[ D]]`` float mask, or
        ``None`` without a threshold.
    """
    t = probs_t.detach().float()
    target = hard_labels(t, activation, one_hot=True) if hard else t
    if threshold is None:
        return target, None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    conf = confidence(t, activation).amax(dim=1, keepdim=True)
    return target, (conf >= threshold).to(t.dtype)
