"""Cross-teaching loss against a naive per-pixel reference, 2D and 3D, with and without class weights."""

from __future__ import annotations

import math

import pytest
import torch

from s4mi.handlers.ramps import SigmoidRamp
from s4mi.losses import CrossTeachingLoss, cross_pseudo_label

SMOOTH = 1e-5


def _softmax(col: list[float]) -> list[float]:
    z = [math.exp(v) for v in col]
    return [v / sum(z) for v in z]


def _pixels(t: torch.Tensor) -> list[list[list[float]]]:
    """``B C *spatial`` -> [image][pixel][class] as plain floats."""
    b, c = t.shape[:2]
    flat = t.reshape(b, c, -1).tolist()
    return [[[flat[i][k][v] for k in range(c)] for v in range(len(flat[i][0]))] for i in range(b)]


def naive_dice(logits: torch.Tensor, labels: list[list[int]]) -> float:
    """SSL4MIS's DiceLoss with softmax: per class 1 - (2 sum p q + s) / (sum p^2 + sum q^2 + s) over every pixel of
    the batch, averaged over all classes (background included). ``labels``: [image][pixel] class index."""
    c = logits.shape[1]
    probs = [[_softmax(col) for col in img] for img in _pixels(logits)]
    total = 0.0
    for k in range(c):
        inter = z_sum = y_sum = 0.0
        for i, img in enumerate(probs):
            for v, p in enumerate(img):
                q = 1.0 if labels[i][v] == k else 0.0
                inter += p[k] * q
                z_sum += p[k] * p[k]
                y_sum += q * q
        total += 1.0 - (2 * inter + SMOOTH) / (z_sum + y_sum + SMOOTH)
    return total / c


def naive_ce(logits: torch.Tensor, labels: list[list[int]], weights: list[float] | None) -> float:
    """PyTorch's weighted cross-entropy by hand: sum_i w_{y_i} (-log p_{i, y_i}) / sum_i w_{y_i}."""
    num = den = 0.0
    for i, img in enumerate(_pixels(logits)):
        for v, col in enumerate(img):
            y = labels[i][v]
            w = 1.0 if weights is None else weights[y]
            num += -w * math.log(_softmax(col)[y])
            den += w
    return num / den


def naive_argmax(logits: torch.Tensor) -> list[list[int]]:
    return [[col.index(max(col)) for col in img] for img in _pixels(logits)]


def _labels(y: torch.Tensor) -> list[list[int]]:
    return [[int(v) for v in img] for img in y.reshape(y.shape[0], -1).tolist()]


SHAPES = {"2d": (5, 4), "3d": (3, 4, 2)}


@pytest.mark.parametrize("dims", ["2d", "3d"])
@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 3.0]])
def test_matches_naive_reference(dims: str, weights: list[float] | None) -> None:
    g = torch.Generator().manual_seed(1)
    spatial, c = SHAPES[dims], 3
    logits_lb = torch.randn(2, c, *spatial, generator=g) * 2
    y_lb = torch.randint(0, c, (2, 1, *spatial), generator=g)
    logits_ulb = torch.randn(3, c, *spatial, generator=g) * 2
    logits_other = torch.randn(3, c, *spatial, generator=g) * 2
    loss = CrossTeachingLoss(class_weights=weights)
    weight = 0.07

    sup = 0.5 * (naive_ce(logits_lb, _labels(y_lb), weights) + naive_dice(logits_lb, _labels(y_lb)))
    cross = naive_dice(logits_ulb, naive_argmax(logits_other))
    assert loss.supervised(logits_lb, y_lb).item() == pytest.approx(sup, rel=1e-5)
    assert loss.cross(logits_ulb, logits_other).item() == pytest.approx(cross, rel=1e-5)
    total = loss(logits_lb, y_lb, logits_ulb, logits_other, weight)
    assert total.item() == pytest.approx(sup + weight * cross, rel=1e-5)


def test_class_weights_change_only_the_cross_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 6, 6, generator=g)
    y = torch.randint(0, 2, (2, 1, 6, 6), generator=g)
    plain, weighted = CrossTeachingLoss(), CrossTeachingLoss(class_weights=[1.0, 4.0])
    assert plain.dice(logits, y).item() == weighted.dice(logits, y).item()
    assert plain.supervised(logits, y).item() != pytest.approx(weighted.supervised(logits, y).item())
    other = torch.randn(2, 2, 6, 6, generator=g)
    assert plain.cross(logits, other).item() == weighted.cross(logits, other).item()


def test_pseudo_label_is_the_other_networks_argmax_without_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    other = (torch.randn(2, 4, 3, 5, generator=g) * 3).requires_grad_()
    label = cross_pseudo_label(other)
    assert label.shape == (2, 1, 3, 5) and not label.requires_grad
    assert _labels(label) == naive_argmax(other)

    mine = torch.randn(2, 4, 3, 5, generator=g).requires_grad_()
    CrossTeachingLoss().cross(mine, other).backward()
    assert other.grad is None, "the pseudo label must not carry gradient to the network that made it"
    assert mine.grad is not None and mine.grad.abs().sum() > 0


def test_each_network_gets_gradient_from_its_unlabelled_term() -> None:
    """Summed as the trainer sums them, each network's logits on the unlabelled batch get a gradient only from its own
    cross term (the other's argmax is a constant), and that gradient is the cross term's alone."""
    g = torch.Generator().manual_seed(4)
    a, b = (torch.randn(2, 2, 4, 4, generator=g).requires_grad_() for _ in range(2))
    loss = CrossTeachingLoss()
    (loss.cross(a, b) + loss.cross(b, a)).backward()
    assert a.grad is not None and b.grad is not None
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    loss.cross(a, b).backward()
    assert torch.allclose(a.grad, ga) and b.grad is None
    loss.cross(b, a).backward()
    assert torch.allclose(b.grad, gb)


def test_refuses_bad_inputs() -> None:
    loss = CrossTeachingLoss()
    with pytest.raises(ValueError, match="class indices"):
        loss.supervised(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        loss.cross(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError, match="non-negative"):
        CrossTeachingLoss(class_weights=[1.0, -1.0])


@pytest.mark.parametrize(
    ("t", "expected"), [(0, 0.1 * math.exp(-5)), (50, 0.1 * math.exp(-1.25)), (100, 0.1), (150, 0.1)]
)
def test_weight_schedule(t: int, expected: float) -> None:
    """lambda(t) = 0.1 exp(-5 (1 - t/L)^2) with L = 100 iterations, 0.1 after L."""
    assert SigmoidRamp(0.1, 100)(t) == pytest.approx(expected)
