from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from s4mi.losses import (
    ConsistencyMSELoss,
    RelationConsistencyLoss,
    relation_consistency_loss,
    relation_matrix,
    softmax_mse_loss,
)


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


@pytest.mark.parametrize("loss", [softmax_mse_loss, relation_consistency_loss])
def test_gradient_reaches_student_only(loss: Any) -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    loss(s, t).backward()
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


def naive_relation_mse(a_s: list[list[float]], a_t: list[list[float]]) -> float:
    """SRC-MT's relation MSE written out: Gram matrix, each row divided by its L2 norm, mean squared difference."""

    def relation(a: list[list[float]]) -> list[list[float]]:
        gram = [[sum(x * y for x, y in zip(ai, aj)) for aj in a] for ai in a]
        return [[g / math.sqrt(sum(v * v for v in row)) for g in row] for row in gram]

    gs, gt = relation(a_s), relation(a_t)
    sq = [(x - y) ** 2 for rs, rt in zip(gs, gt) for x, y in zip(rs, rt)]
    return sum(sq) / len(sq)


def test_relation_consistency_matches_naive_reference() -> None:
    a_s = [[0.5, 1.0, 0.0, 2.0], [1.5, 0.2, 0.3, 0.0], [0.0, 0.7, 1.1, 0.4]]
    a_t = [[0.4, 1.2, 0.1, 1.8], [0.2, 0.9, 0.3, 0.5], [1.0, 0.1, 0.0, 0.2]]
    want = naive_relation_mse(a_s, a_t)
    s, t = torch.tensor(a_s, dtype=torch.float64), torch.tensor(a_t, dtype=torch.float64)
    assert relation_consistency_loss(s, t).item() == pytest.approx(want, rel=1e-12)
    # the authors' reduction: the sum over the B x B entries divided by B, i.e. B times the mean
    assert relation_consistency_loss(s, t, reduction="srcmt").item() == pytest.approx(3 * want, rel=1e-12)
    assert RelationConsistencyLoss("srcmt")(s, t).item() == pytest.approx(3 * want, rel=1e-6)


def test_relation_matrix_rows_are_unit_and_scale_free() -> None:
    a = torch.rand(5, 7, dtype=torch.float64)
    g = relation_matrix(a)
    assert torch.allclose(g.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(relation_matrix(3.0 * a), g)  # only the relations count, not the features' scale
    assert relation_consistency_loss(a, 2.0 * a).item() == pytest.approx(0.0, abs=1e-12)


def test_relation_consistency_refuses_mismatched_shapes_and_reductions() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        relation_consistency_loss(torch.rand(4, 6), torch.rand(3, 6))
    with pytest.raises(ValueError, match="reduction"):
        relation_consistency_loss(torch.rand(4, 6), torch.rand(4, 6), reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        RelationConsistencyLoss("sum")  # type: ignore[arg-type]


def test_relation_matrix_stays_in_the_features_dtype_under_autocast() -> None:
    """Under mixed precision the Gram matrix is not computed in half precision (its error would swamp the loss)."""
    a = torch.rand(6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = relation_matrix(a)
        loss = relation_consistency_loss(a, a + 0.01)
    assert g.dtype == torch.float32 and torch.allclose(g, relation_matrix(a))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(relation_consistency_loss(a, a + 0.01).item())
