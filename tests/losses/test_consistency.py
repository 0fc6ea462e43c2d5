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


def test_confidence_mask_matches_naive_reference() -> None:
    """Sigmoid: each (image, finding) term counts when the teacher's max(q, 1 - q) reaches the threshold; softmax:
    each image counts when its top class does. The mean runs over all terms, masked ones as 0."""
    a = [[0.2, -1.0, 3.0], [1.0, 1.0, 0.0]]
    b = [[0.1, 2.5, -3.0], [-0.2, 0.3, 4.0]]

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    terms = [
        (sig(x) - sig(y)) ** 2 if max(sig(y), 1 - sig(y)) >= 0.9 else 0.0
        for ra, rb in zip(a, b)
        for x, y in zip(ra, rb)
    ]
    got = ConsistencyMSELoss("sigmoid", threshold=0.9)(torch.tensor(a), torch.tensor(b))
    assert sum(t > 0 for t in terms) == 3  # 2.5, -3.0 and 4.0 pass; the others do not
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    keep = [max(softmax(rb)) >= 0.9 for rb in b]
    assert keep == [True, True]
    keep = [max(softmax(rb)) >= 0.95 for rb in b]
    assert keep == [False, True]  # top classes 0.913 and 0.962
    terms = [(p - q) ** 2 * k for ra, rb, k in zip(a, b, keep) for p, q in zip(softmax(ra), softmax(rb))]
    got = ConsistencyMSELoss("softmax", threshold=0.95)(torch.tensor(a), torch.tensor(b))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    assert torch.allclose(ConsistencyMSELoss("sigmoid", threshold=0.5)(s, t), softmax_mse_loss(s, t, "sigmoid"))


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        softmax_mse_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="activation"):
        ConsistencyMSELoss("relu")
    with pytest.raises(ValueError, match="threshold"):
        ConsistencyMSELoss("sigmoid", threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        ConsistencyMSELoss("sigmoid", threshold=0.9)(torch.zeros(2, 3), torch.zeros(2, 4))
