"""Soft Dice consistency (online pseudo-labelling) against a naive per-voxel reference."""

from __future__ import annotations

import math

import pytest
import torch

from s4mi.losses import SoftDiceConsistencyLoss, pseudo_label_targets


def naive_soft_dice(logits, probs_t, activation="sigmoid", hard=False, threshold=None, batch=True, smooth=1e-5):
    """Loops over classes, images and voxels with plain floats: 1 - (2 sum m p q + s) / (sum m p + sum m q + s)."""
    b, c = logits.shape[:2]
    flat_s = logits.reshape(b, c, -1).tolist()
    flat_t = probs_t.reshape(b, c, -1).tolist()
    n = len(flat_s[0][0])

    def student(i, k, v):
        if activation == "sigmoid":
            return 1.0 / (1.0 + math.exp(-flat_s[i][k][v]))
        z = [math.exp(flat_s[i][j][v]) for j in range(c)]
        return z[k] / sum(z)

    def target(i, k, v):
        q = flat_t[i][k][v]
        if not hard:
            return q
        if activation == "sigmoid":
            return 1.0 if q > 0.5 else 0.0
        col = [flat_t[i][j][v] for j in range(c)]
        return 1.0 if col.index(max(col)) == k else 0.0

    def mask(i, v):
        if threshold is None:
            return 1.0
        if activation == "sigmoid":
            conf = max(max(flat_t[i][j][v], 1 - flat_t[i][j][v]) for j in range(c))
        else:
            conf = max(flat_t[i][j][v] for j in range(c))
        return 1.0 if conf >= threshold else 0.0

    groups = [list(range(b))] if batch else [[i] for i in range(b)]
    losses = []
    for g in groups:
        for k in range(c):
            inter = sum(mask(i, v) * student(i, k, v) * target(i, k, v) for i in g for v in range(n))
            ps = sum(mask(i, v) * student(i, k, v) for i in g for v in range(n))
            qs = sum(mask(i, v) * target(i, k, v) for i in g for v in range(n))
            losses.append(1.0 - (2 * inter + smooth) / (ps + qs + smooth))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("threshold", [None, 0.7])
@pytest.mark.parametrize("batch", [True, False])
def test_sigmoid_matches_naive_reference(hard, threshold, batch) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 5, 4, generator=g) * 2
    probs_t = torch.rand(3, 1, 5, 4, generator=g)
    got = SoftDiceConsistencyLoss("sigmoid", hard=hard, threshold=threshold, batch=batch)(logits, probs_t)
    ref = naive_soft_dice(logits, probs_t, "sigmoid", hard, threshold, batch)
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_softmax_3d_matches_naive_reference(hard, threshold) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 3, 4, 2, generator=g) * 2
    probs_t = torch.softmax(torch.randn(2, 3, 3, 4, 2, generator=g) * 2, dim=1)
    got = SoftDiceConsistencyLoss("softmax", hard=hard, threshold=threshold, batch=False)(logits, probs_t)
    ref = naive_soft_dice(logits, probs_t, "softmax", hard, threshold, batch=False)
    assert got.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_perfect_agreement_and_gradient_to_student_only() -> None:
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = (target * 2 - 1) * 30  # sigmoid saturates to the target
    assert SoftDiceConsistencyLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-5)
    s = torch.randn(2, 1, 8, 8, requires_grad=True)
    t = torch.rand(2, 1, 8, 8, requires_grad=True)
    SoftDiceConsistencyLoss()(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_threshold_mask_and_hard_targets() -> None:
    t = torch.tensor([0.9, 0.55, 0.1, 0.3]).view(1, 1, 4)
    target, mask = pseudo_label_targets(t, "sigmoid", hard=True, threshold=0.8)
    assert target.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert mask.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    assert pseudo_label_targets(t, "sigmoid")[1] is None


def test_errors() -> None:
    with pytest.raises(ValueError, match="differ"):
        SoftDiceConsistencyLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="activation"):
        SoftDiceConsistencyLoss("relu")
    with pytest.raises(ValueError, match="threshold"):
        SoftDiceConsistencyLoss(threshold=1.5)
