from __future__ import annotations

import math

import pytest
import torch

from s4mi.losses import MaskedBCEWithLogitsLoss


def _naive(logits: torch.Tensor, target: torch.Tensor) -> float:
    total, n = 0.0, 0
    for z, y in zip(logits.flatten().tolist(), target.flatten().tolist()):
        if y < 0:
            continue
        p = 1 / (1 + math.exp(-z))
        total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
        n += 1
    return total / max(n, 1)


def test_masked_bce_matches_naive_reference_and_torch_when_all_known() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 6, generator=g)
    target = torch.randint(0, 2, (5, 6), generator=g).float()
    loss = MaskedBCEWithLogitsLoss()
    assert loss(logits, target).item() == pytest.approx(torch.nn.BCEWithLogitsLoss()(logits, target).item(), abs=1e-6)
    target[0, :3] = -1
    target[3, 5] = -1
    assert loss(logits, target).item() == pytest.approx(_naive(logits, target), abs=1e-5)


def test_unknown_labels_get_no_gradient_and_all_unknown_is_zero() -> None:
    logits = torch.randn(2, 3, requires_grad=True)
    target = torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    MaskedBCEWithLogitsLoss()(logits, target).backward()
    assert logits.grad is not None and logits.grad[0, 1] == 0 and torch.all(logits.grad[1] == 0)
    assert MaskedBCEWithLogitsLoss()(logits, -torch.ones(2, 3)).item() == 0.0
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        MaskedBCEWithLogitsLoss()(logits, torch.zeros(2, 4))
