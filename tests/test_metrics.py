from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric

from s4mi.metrics import FiniteSurfaceDistanceMetric, MeanAUCMetric, mean_auc


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


def _naive_multiclass(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Top-1, balanced and one-vs-rest accuracy written out over classes, in numpy."""
    n, c = scores.shape
    pred = scores.argmax(axis=1)
    recalls, ovr = [], []
    for k in range(c):
        tp = np.sum((pred == k) & (truth == k))
        tn = np.sum((pred != k) & (truth != k))
        ovr.append((tp + tn) / n)
        if np.sum(truth == k):
            recalls.append(tp / np.sum(truth == k))
    return {"accuracy": float(np.mean(pred == truth)), "balanced": float(np.mean(recalls)), "ovr": float(np.mean(ovr))}


def test_multi_class_accuracy_is_top1_and_ovr_accuracy_keeps_its_own_name() -> None:
    """A barely trained 10-class model: one-vs-rest accuracy looks high (true negatives), top-1 does not."""
    from s4mi.metrics import MacroConfusionMatrixMetric, TopOneAccuracyMetric

    rng = np.random.default_rng(0)
    n, c = 50, 10
    truth = rng.integers(0, c, n)
    scores = rng.random((n, c))
    scores[:7, :] = 0
    scores[np.arange(7), truth[:7]] = 1  # 7 sure hits, the rest mostly guesses
    ref = _naive_multiclass(scores, truth)

    y_pred, y = torch.tensor(scores), torch.nn.functional.one_hot(torch.tensor(truth), c).float()
    onehot_pred = torch.nn.functional.one_hot(y_pred.argmax(1), c).float()
    top1, balanced, ovr = (
        TopOneAccuracyMetric(),
        MacroConfusionMatrixMetric("sensitivity"),
        MacroConfusionMatrixMetric("accuracy"),
    )
    for sl in (slice(0, 20), slice(20, n)):  # two batches, accumulated
        top1(y_pred[sl], y[sl])
        balanced(onehot_pred[sl], y[sl])
        ovr(onehot_pred[sl], y[sl])
    assert top1.aggregate().item() == pytest.approx(ref["accuracy"])
    assert balanced.aggregate()[0].item() == pytest.approx(ref["balanced"])
    assert ovr.aggregate()[0].item() == pytest.approx(ref["ovr"])
    assert ref["ovr"] > 0.75 and ref["accuracy"] < 0.35, "the example should show the gap the issue reports"


def test_top1_accuracy_refuses_multi_label_targets() -> None:
    from s4mi.metrics import top1_accuracy

    with pytest.raises(ValueError, match="one-hot"):
        top1_accuracy(torch.rand(2, 3), torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="B C"):
        top1_accuracy(torch.rand(2, 3), torch.rand(2, 4))


def _skin_metrics(name: str) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "bundles" / name / "configs" / "train.json"))
    return {
        k: parser.get_parsed_content(f"validate#additional_metrics#{k}")
        for k in parser["validate"]["additional_metrics"]
    }


@pytest.mark.parametrize(
    "name",
    sorted(  # every skin bundle on disk, so a new one is covered
        p.parent.parent.name
        for p in (Path(__file__).resolve().parents[1] / "bundles").glob("*_skin_classification/configs/train.json")
    ),
)
def test_skin_bundles_report_top1_balanced_and_ovr_accuracy(name: str) -> None:
    """The engine's reported numbers for one batch of decollated items, against the naive numpy reference."""
    metrics = _skin_metrics(name)
    assert {"val_accuracy", "val_balanced_accuracy", "val_ovr_accuracy"} <= set(metrics), sorted(metrics)
    rng = np.random.default_rng(1)
    n, c = 30, 7
    truth, scores = rng.integers(0, c, n), rng.random((n, c))
    ref = _naive_multiclass(scores, truth)
    probs = torch.softmax(torch.tensor(scores, dtype=torch.float32), dim=1)
    items = [
        {
            "pred": probs[i],
            "pred_class": torch.nn.functional.one_hot(probs[i].argmax(), c).float(),
            "label": torch.nn.functional.one_hot(torch.tensor(truth[i]), c).float(),
        }
        for i in range(n)
    ]
    expected = {
        "val_accuracy": ref["accuracy"],
        "val_balanced_accuracy": ref["balanced"],
        "val_ovr_accuracy": ref["ovr"],
    }
    for key, value in expected.items():
        handler = metrics[key]
        handler.reset()
        handler.update(handler._output_transform(items))
        assert float(handler.compute()) == pytest.approx(value), key


def test_macro_confusion_metric_equals_the_metric_object() -> None:
    """The process-local function (used by the probes, which run on rank 0 alone) gives the handler metric's value."""
    from s4mi.metrics import MacroConfusionMatrixMetric, macro_confusion_metric

    g = torch.Generator().manual_seed(0)
    pred = torch.nn.functional.one_hot(torch.randint(0, 4, (50,), generator=g), 4)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (50,), generator=g), 4)
    for name in ("f1 score", "sensitivity", "specificity", "accuracy"):
        metric = MacroConfusionMatrixMetric(name)
        metric(y_pred=pred, y=y)
        assert macro_confusion_metric(pred, y, name) == pytest.approx(float(metric.aggregate()[0]), abs=1e-6)


def _naive_per_class(scores: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    """Each class's one-vs-rest AUC and confusion metrics of the arg-max prediction, written out in numpy."""
    n, c = scores.shape
    pred = scores.argmax(axis=1)
    rows = []
    for k in range(c):
        tp = float(np.sum((pred == k) & (truth == k)))
        fp = float(np.sum((pred == k) & (truth != k)))
        fn = float(np.sum((pred != k) & (truth == k)))
        tn = n - tp - fp - fn
        rows.append(
            {
                "auc": naive_auc(scores[:, k].tolist(), (truth == k).astype(int).tolist()),
                "sensitivity": tp / (tp + fn),
                "specificity": tn / (tn + fp),
                "accuracy": (tp + tn) / n,
                "f1": 2 * tp / (2 * tp + fp + fn),
                "positives": tp + fn,
            }
        )
    return rows


def _skin_items(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, torch.Tensor]]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, c, n)
    scores = rng.random((n, c)) + 0.4 * np.eye(c)[truth]
    items = [
        {
            "pred": torch.tensor(scores[i], dtype=torch.float32),
            "pred_class": torch.nn.functional.one_hot(torch.tensor(scores[i].argmax()), c).float(),
            "label": torch.nn.functional.one_hot(torch.tensor(truth[i]), c).float(),
        }
        for i in range(n)
    ]
    return scores, truth, items


def test_per_class_metrics_match_the_naive_reference_and_the_macro_metrics() -> None:
    from s4mi.metrics import MacroConfusionMatrixMetric, per_class_metrics

    scores, truth, items = _skin_items(60, 4, seed=3)
    stack = {k: torch.stack([it[k] for it in items]) for k in ("pred", "pred_class", "label")}
    rows = per_class_metrics(stack["pred"], stack["pred_class"], stack["label"], ["a", "b", "c", "d"])
    ref = _naive_per_class(scores, truth)
    assert [r["class"] for r in rows] == ["a", "b", "c", "d", "mean"]
    for row, want in zip(rows, ref):
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=1e-6), (row["class"], key)
    mean = rows[-1]
    assert mean["auc"] == pytest.approx(mean_auc(stack["pred"], stack["label"])[0])
    for key, name in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("f1", "f1 score")):
        macro = MacroConfusionMatrixMetric(name)
        macro(stack["pred_class"], stack["label"])
        assert mean[key] == pytest.approx(float(macro.aggregate()[0]), abs=1e-6), key
    assert mean["positives"] == 60
    with pytest.raises(ValueError, match="C = 3 class names"):
        per_class_metrics(stack["pred"], stack["pred_class"], stack["label"], ["a", "b", "c"])


def test_per_class_handler_writes_one_row_per_class_over_the_whole_evaluation(tmp_path: Path) -> None:
    import csv

    from ignite.engine import Engine

    from s4mi.handlers import PerClassMetrics

    scores, truth, items = _skin_items(45, 3, seed=4)
    batches = [items[i : i + 10] for i in range(0, 45, 10)]  # decollated outputs, as MONAI's evaluators give
    engine = Engine(lambda e, batch: batch)
    handler = PerClassMetrics(["x", "y", "z"], folder=tmp_path / "eval", file_name="per_class.csv")
    handler.attach(engine)
    engine.run(batches, max_epochs=2)  # the second epoch starts afresh: the rows cover 45 items, not 90
    with open(tmp_path / "eval" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["x", "y", "z", "mean"]
    for row, want in zip(rows, _naive_per_class(scores, truth)):
        assert float(row["auc"]) == pytest.approx(want["auc"], abs=1e-6)
        assert float(row["f1"]) == pytest.approx(want["f1"], abs=1e-6)
        assert float(row["positives"]) == want["positives"]
    assert float(rows[-1]["positives"]) == 45

    wrong = Engine(lambda e, batch: batch)
    PerClassMetrics(["only", "two"], folder=tmp_path).attach(wrong)
    with pytest.raises(ValueError, match="3 class score.*class_names names 2"):
        wrong.run(batches, max_epochs=1)


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Two one-hot 8x8 images: a square shifted by one pixel, and a prediction where the reference is empty."""
    pred, ref = torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8)
    pred[0, 1, 2:5, 2:5], ref[0, 1, 3:6, 3:6] = 1, 1
    pred[1, 1, 2:5, 2:5] = 1  # the reference of image 1 is empty
    pred[:, 0], ref[:, 0] = 1 - pred[:, 1], 1 - ref[:, 1]
    return pred, ref


def test_surface_distance_leaves_out_empty_masks_where_monai_gives_inf() -> None:
    pred, ref = _masks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about the empty mask
        monai_asd = SurfaceDistanceMetric(symmetric=False)(pred, ref)
        ours = FiniteSurfaceDistanceMetric(symmetric=False, get_not_nans=True)
        ours(pred, ref)
        mean, counted = ours.aggregate()
        hd = HausdorffDistanceMetric(percentile=95)(pred, ref)
    assert torch.isinf(monai_asd[1, 0]) and torch.isnan(hd[1, 0])  # the inconsistency this metric removes
    # image 0 alone, by hand: the border pixels of the predicted square, each to the nearest reference border pixel
    edges_p = [(r, c) for r in range(2, 5) for c in range(2, 5) if r in (2, 4) or c in (2, 4)]
    edges_r = [(r, c) for r in range(3, 6) for c in range(3, 6) if r in (3, 5) or c in (3, 5)]
    naive = sum(min(((r - r2) ** 2 + (c - c2) ** 2) ** 0.5 for r2, c2 in edges_r) for r, c in edges_p) / len(edges_p)
    assert mean.item() == pytest.approx(naive, rel=1e-5)
    assert mean.item() == pytest.approx(monai_asd[0, 0].item(), rel=1e-6)
    assert counted.item() == 1  # image 1 was left out


def test_surface_distance_handler_mean_is_finite() -> None:
    from ignite.engine import Engine

    from s4mi.handlers import SurfaceDistance

    pred, ref = _masks()
    engine = Engine(lambda e, b: b)
    SurfaceDistance(output_transform=lambda out: (out[0], out[1])).attach(engine, "val_asd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.run([(pred, ref)], max_epochs=1)
    assert math.isfinite(engine.state.metrics["val_asd"])
    assert engine.state.metric_details["val_asd"].shape == (2, 1)
