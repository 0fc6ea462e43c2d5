"""DINO's loss, centre and schedules against naive references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s4mi.handlers.ramps import WarmupCosine
from s4mi.losses import DINOLoss


def _naive_loss(student: list, teacher: list, center: torch.Tensor, t_s: float, t_t: float) -> float:
    """Per image, per (global crop i, crop v != i): -sum_k q_k log p_k, with explicit exp/log loops."""
    b, k = student[0].shape
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            pair = 0.0
            for n in range(b):
                z_t = [(float(t[n, j]) - float(center[0, j])) / t_t for j in range(k)]
                z_s = [float(s[n, j]) / t_s for j in range(k)]
                mt, ms = max(z_t), max(z_s)
                q = [math.exp(z - mt) for z in z_t]
                q = [x / sum(q) for x in q]
                log_norm = ms + math.log(sum(math.exp(z - ms) for z in z_s))
                pair += -sum(q[j] * (z_s[j] - log_norm) for j in range(k))
            total += pair / b
            terms += 1
    return total / terms


@pytest.mark.parametrize("n_local", [0, 3])
def test_loss_matches_a_naive_reference_over_all_cross_view_pairs(n_local: int) -> None:
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 6, generator=g) for _ in range(2 + n_local)]
    teacher = [torch.randn(4, 6, generator=g) for _ in range(2)]
    loss = DINOLoss(6, student_temp=0.1)
    loss.center.copy_(torch.randn(1, 6, generator=g) * 0.3)  # a centre that matters
    got = loss(student, teacher, teacher_temp=0.04)
    expected = _naive_loss(student, teacher, loss.center, 0.1, 0.04)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the same-view pairs are left out: including them gives another number
    with_same = _naive_loss([student[1], student[0], *student[2:]], teacher, loss.center, 0.1, 0.04)
    assert got.item() != pytest.approx(with_same, rel=1e-4)


def test_teacher_gets_no_gradient_and_student_does() -> None:
    s = [torch.randn(3, 5, requires_grad=True) for _ in range(3)]
    t = [torch.randn(3, 5, requires_grad=True) for _ in range(2)]
    DINOLoss(5)(s, t, 0.04).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)


def test_centre_is_an_ema_of_the_teacher_batch_mean_and_is_checkpointed() -> None:
    loss = DINOLoss(3, center_momentum=0.9)
    t1 = [torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]])]
    loss.update_center(t1)
    mean1 = torch.tensor([[2.0, 2.0, 2.0]])
    assert torch.allclose(loss.center, 0.1 * mean1)
    t2 = [torch.full((2, 3), 5.0), torch.full((2, 3), 1.0)]
    loss.update_center(t2)
    assert torch.allclose(loss.center, 0.9 * 0.1 * mean1 + 0.1 * torch.full((1, 3), 3.0))
    restored = DINOLoss(3)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.center, loss.center)


def _dino_cosine_scheduler(base, final, epochs, niter, warmup_epochs=0, start_warmup=0.0) -> np.ndarray:
    """DINO's utils.cosine_scheduler, as the paper's code writes it."""
    warmup_iters = warmup_epochs * niter
    warm = np.linspace(start_warmup, base, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter - warmup_iters)
    schedule = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warm, schedule))


@pytest.mark.parametrize(
    ("base", "final", "epochs", "niter", "warmup", "start"),
    [
        (5e-4, 1e-6, 10, 7, 2, 0.0),  # learning rate
        (0.04, 0.4, 10, 7, 0, 0.0),  # weight decay
        (0.996, 1.0, 10, 7, 0, 0.0),  # teacher momentum
        (0.07, 0.07, 10, 1, 3, 0.04),  # teacher temperature warm-up, by epoch
    ],
)
def test_warmup_cosine_is_dinos_scheduler(base, final, epochs, niter, warmup, start) -> None:
    reference = _dino_cosine_scheduler(base, final, epochs, niter, warmup, start)
    ramp = WarmupCosine(base, final, epochs * niter, warmup * niter, start)
    assert [ramp(t) for t in range(len(reference))] == pytest.approx(reference.tolist(), rel=1e-9, abs=1e-12)
    assert ramp(len(reference) + 5) == final
