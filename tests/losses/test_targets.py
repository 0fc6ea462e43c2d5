"""s4mi.losses.targets: one definition of confidence and hard labels, checked against per-element loops."""

from __future__ import annotations

import itertools

import pytest
import torch

from s4mi.handlers import PseudoLabelRenderer
from s4mi.losses import ConsistencyMSELoss, confidence, hard_labels, probabilities, pseudo_label_targets


def _naive(probs: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, hard label) voxel by voxel with Python max/argmax."""
    b, c, h, w = probs.shape
    conf = torch.zeros(b, c if activation == "sigmoid" else 1, h, w)
    hard = torch.zeros_like(conf)
    for i, y, x in itertools.product(range(b), range(h), range(w)):
        p = [float(probs[i, k, y, x]) for k in range(c)]
        if activation == "sigmoid":
            for k in range(c):
                conf[i, k, y, x] = max(p[k], 1 - p[k])
                hard[i, k, y, x] = 1.0 if p[k] > 0.5 else 0.0
        else:
            conf[i, 0, y, x] = max(p)
            hard[i, 0, y, x] = p.index(max(p))
    return conf, hard


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_confidence_and_hard_labels_match_a_naive_loop(activation: str) -> None:
    probs = probabilities(torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1)), activation)
    conf, hard = _naive(probs, activation)
    assert torch.allclose(confidence(probs, activation), conf)
    assert torch.equal(hard_labels(probs, activation), hard)
    if activation == "softmax":
        one_hot = hard_labels(probs, activation, one_hot=True)
        assert torch.equal(one_hot.argmax(1, keepdim=True).float(), hard) and torch.equal(
            one_hot.sum(1), torch.ones(2, 4, 5)
        )


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_renderer_loss_and_targets_share_the_definitions(activation: str) -> None:
    probs = probabilities(torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(2)), activation)
    renderer = PseudoLabelRenderer(torch.nn.Identity(), data_loader=[], activation=activation)
    assert torch.equal(renderer.confidence(probs), confidence(probs, activation))
    assert torch.equal(renderer.hard_label(probs), hard_labels(probs, activation).to(torch.uint8))
    target, mask = pseudo_label_targets(probs, activation, hard=True, threshold=0.7)
    assert torch.equal(mask, (confidence(probs, activation).amax(1, keepdim=True) >= 0.7).float())
    assert torch.equal(target, hard_labels(probs, activation, one_hot=True))
    # the MSE consistency masks each element (sigmoid) or voxel (softmax) by the same confidence
    logits_t = torch.logit(probs) if activation == "sigmoid" else torch.log(probs)
    logits_s = torch.zeros_like(probs)
    p_s = probabilities(logits_s, activation)
    expected = ((p_s - probs) ** 2 * (confidence(probs, activation) >= 0.7)).mean()
    assert torch.allclose(ConsistencyMSELoss(activation, threshold=0.7)(logits_s, logits_t), expected, atol=1e-6)


def test_an_unknown_activation_is_refused_everywhere() -> None:
    for f in (lambda: confidence(torch.rand(1, 1), "relu"), lambda: hard_labels(torch.rand(1, 1), "relu")):
        with pytest.raises(ValueError, match="'relu'"):
            f()
