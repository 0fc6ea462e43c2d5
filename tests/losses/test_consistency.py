from __future__ import annotations

import math

import pytest
import torch

from s4mi.losses import ConsistencyMSELoss, softmax_mse_loss


def naive_softmax_mse(a: list[list[float]], b: list[list[float]]) -> float:
    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    sq = [(p - q) ** 2 for ra, rb in zip(a, b) for p, q in zip(softmax(ra), softmax(rb))]
    return sum(sq) / len(sq)


def test_softmax_mse_matches_naive_reference() -> None:
    a = [[0.2, -1.0, 3.0], [1.0, 1.0, 0.0]]
    b = [[0.0, 0.5, 1.0], [-2.0, 0.3, 0.1]]
    got = softmax_mse_loss(torch.tensor(a), torch.tensor(b))
    assert got.item() == pytest.approx(naive_softmax_mse(a, b), rel=1e-6)


def test_sigmoid_and_voxelwise() -> None:
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    ref = ((torch.sigmoid(s) - torch.sigmoid(t)) ** 2).mean()
    assert torch.allclose(softmax_mse_loss(s, t, "sigmoid"), ref)
    ref = ((torch.softmax(s, 1) - torch.softmax(t, 1)) ** 2).mean()
    assert torch.allclose(ConsistencyMSELoss()(s, t), ref)


def test_gradient_reaches_student_only() -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    softmax_mse_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        softmax_mse_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="activation"):
        ConsistencyMSELoss("relu")
