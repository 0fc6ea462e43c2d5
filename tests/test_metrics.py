from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s4mi.metrics import MeanAUCMetric, mean_auc


def naive_auc(scores: list[float], labels: list[int]) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_mean_auc_matches_naive_reference() -> None:
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 2, size=(40, 3)))
    p = torch.tensor(rng.random((40, 3))) + 0.3 * y
    value, per_class = mean_auc(p, y)
    ref = [naive_auc(p[:, c].tolist(), y[:, c].tolist()) for c in range(3)]
    assert per_class == pytest.approx(ref, abs=1e-9)
    assert value == pytest.approx(float(np.mean(ref)), abs=1e-9)


def test_unknown_labels_are_ignored_and_undefined_classes_skipped() -> None:
    p = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.8, 0.9, 0.5], [0.2, 0.1, 0.5]])
    y = torch.tensor([[1, -1, 0], [0, 0, 0], [-1, 1, 0], [0, 0, 0]])
    value, per_class = mean_auc(p, y)
    assert per_class[0] == pytest.approx(naive_auc([0.9, 0.1, 0.2], [1, 0, 0]))
    assert per_class[1] == pytest.approx(naive_auc([0.3, 0.9, 0.1], [0, 1, 0]))
    assert math.isnan(per_class[2]), "a class with no positive has no AUC"
    assert value == pytest.approx((per_class[0] + per_class[1]) / 2)


def test_metric_accumulates_batches_and_rejects_bad_shapes() -> None:
    m = MeanAUCMetric()
    m(torch.tensor([[0.9], [0.1]]), torch.tensor([[1], [0]]))
    m(torch.tensor([[0.2], [0.7]]), torch.tensor([[1], [0]]))
    assert m.aggregate() == pytest.approx(naive_auc([0.9, 0.1, 0.2, 0.7], [1, 0, 1, 0]))
    with pytest.raises(ValueError, match="B C"):
        mean_auc(torch.zeros(3, 2), torch.zeros(3, 3))


def test_macro_confusion_metrics_match_naive_per_class_average() -> None:
    from s4mi.metrics import MacroConfusionMatrixMetric

    y_true = [0, 0, 0, 0, 0, 1, 1, 2]
    y_pred = [0, 2, 0, 1, 0, 1, 1, 1]
    n = 3

    def onehot(v: list[int]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(v), n).float()

    def naive(name: str) -> float:
        vals = []
        for c in range(n):
            tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
            fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
            fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
            tn = len(y_true) - tp - fp - fn
            vals.append(
                {
                    "sensitivity": tp / (tp + fn),
                    "specificity": tn / (tn + fp),
                    "accuracy": (tp + tn) / len(y_true),
                    "f1 score": 2 * tp / (2 * tp + fp + fn),
                }[name]
            )
        return sum(vals) / n

    for name in ("sensitivity", "specificity", "accuracy", "f1 score"):
        m = MacroConfusionMatrixMetric(name)
        m(onehot(y_pred[:5]), onehot(y_true[:5]))
        m(onehot(y_pred[5:]), onehot(y_true[5:]))
        assert m.aggregate()[0].item() == pytest.approx(naive(name)), name
    # the micro average that MONAI's reduction="mean" gives makes sensitivity equal F1; macro does not here
    assert naive("sensitivity") != pytest.approx(naive("f1 score"))
