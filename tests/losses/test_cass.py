"""CASS's loss against a naive per-sample loop written here, its extreme values and its gradients."""

from __future__ import annotations

import math

import pytest
import torch

from s4mi.losses import CASSLoss, cass_loss


def _naive(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per sample: 2 - 2 * (x . y) / (|x| |y|), with explicit sums."""
    out = []
    for i in range(x.shape[0]):
        a, b = [float(v) for v in x[i]], [float(v) for v in y[i]]
        dot = sum(p * q for p, q in zip(a, b, strict=True))
        norm_a, norm_b = math.sqrt(sum(p * p for p in a)), math.sqrt(sum(q * q for q in b))
        out.append(2.0 - 2.0 * dot / (norm_a * norm_b))
    return out


def test_loss_matches_a_naive_per_sample_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g)
    per_sample = _naive(x, y)
    assert CASSLoss()(x, y).item() == pytest.approx(sum(per_sample) / 5, rel=1e-6)
    assert CASSLoss("sum")(x, y).item() == pytest.approx(sum(per_sample), rel=1e-6)
    assert CASSLoss("none")(x, y).tolist() == pytest.approx(per_sample, rel=1e-5)
    assert cass_loss(x, y).item() == pytest.approx(sum(per_sample) / 5, rel=1e-6)


def test_identical_vectors_give_zero_and_opposite_ones_four() -> None:
    x = torch.randn(4, 6)
    assert CASSLoss()(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert CASSLoss()(x, 2.5 * x).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert CASSLoss()(x, -x).item() == pytest.approx(4.0, abs=1e-6)
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert CASSLoss()(e0, e1).item() == pytest.approx(2.0, abs=1e-6)  # orthogonal


def test_symmetric_and_both_sides_get_a_gradient() -> None:
    """CASS's code detaches neither network's output: the one loss trains both."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, generator=g, requires_grad=True)
    y = torch.randn(3, 5, generator=g, requires_grad=True)
    loss = CASSLoss()(x, y)
    assert loss.item() == pytest.approx(CASSLoss()(y, x).item(), rel=1e-7)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_shape_and_reduction_are_checked() -> None:
    with pytest.raises(ValueError, match="one shape"):
        CASSLoss()(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="B x D"):
        CASSLoss()(torch.randn(2, 3, 1), torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="reduction"):
        CASSLoss("max")  # type: ignore[arg-type]
