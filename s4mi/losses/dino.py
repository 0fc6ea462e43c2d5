"""DINO's self-distillation loss with a centred, sharpened teacher (Caron et al., "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["DINOLoss"]


class DINOLoss(torch.nn.Module):
    r"""Cross-entropy between the centred, sharpened teacher distribution of each global crop and the student's
    distribution of every other crop.

    With teacher outputs :math:`t_i` of the ``G`` global crops and student outputs :math:`s_v` of all ``V`` crops
    (the ``G`` global ones first, then the local ones), per image

    .. math:: L = \frac{1}{G (V - 1)} \sum_{i < G} \sum_{v \ne i}
              - \mathrm{softmax}\big((t_i - c) / \tau_t\big) \cdot \log \mathrm{softmax}(s_v / \tau_s)

    averaged over the batch (the paper's Algorithm 1, over all crop pairs except a crop with itself). The centre
    :math:`c` is an EMA of the teacher's batch mean, :math:`c \leftarrow m c + (1 - m)\,\mathrm{mean}(t)`, all-reduced
    across ranks under DDP so every rank holds the same centre; it is a buffer, so it is in ``state_dict`` and a
    checkpoint of this module resumes it. Centring and sharpening (a low :math:`\tau_t`) together avoid collapse.

    The teacher temperature is an argument of :meth:`forward` (it is warmed up over the first epochs: a
    :class:`s4mi.handlers.ramps.WarmupCosine` ramp kept by the trainer), so the loss holds no schedule.

    Args:
        out_dim: the head's output dimension ``K``.
        n_global_crops: ``G``, the crops the teacher sees (2 in DINO).
        student_temp: :math:`\tau_s` (0.1).
        center_momentum: :math:`m` (0.9).
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, n_global_crops: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        if n_global_crops < 1:
            raise ValueError(f"n_global_crops must be >= 1, got {n_global_crops}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.n_global_crops = int(n_global_crops)
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_out: Sequence[torch.Tensor], teacher_out: Sequence[torch.Tensor], teacher_temp: float
    ) -> torch.Tensor:
        """Args:
            student_out: ``V`` tensors ``B K``, the global crops first.
            teacher_out: ``G`` tensors ``B K`` (no gradient is taken through them).
            teacher_temp: :math:`\\tau_t` of this step.

        Returns:
            the scalar loss. Call :meth:`update_center` with the teacher outputs after it.
        """
        if len(teacher_out) != self.n_global_crops:
            raise ValueError(f"expected {self.n_global_crops} teacher outputs (global crops), got {len(teacher_out)}")
        if len(student_out) < 2:
            raise ValueError(f"DINO needs at least two student crops, got {len(student_out)}")
        targets = [F.softmax((t.detach().float() - self.center) / teacher_temp, dim=-1) for t in teacher_out]
        log_probs = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_out]
        total = torch.zeros((), device=log_probs[0].device)
        terms = 0
        for i, q in enumerate(targets):
            for v, log_p in enumerate(log_probs):
                if v == i:  # the same view: no pair
                    continue
                total = total + torch.sum(-q * log_p, dim=-1).mean()
                terms += 1
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[torch.Tensor]) -> None:
        """``c <- m c + (1 - m) mean(teacher outputs)``, the mean over every rank's global crops under DDP."""
        t = torch.cat([x.detach().float() for x in teacher_out])
        batch_sum = t.sum(dim=0, keepdim=True)
        count = torch.tensor(float(t.shape[0]), device=t.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1.0 - self.center_momentum)
