"""Metrics MONAI lacks in the form the papers report them."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import ConfusionMatrixMetric, CumulativeIterationMetric, ROCAUCMetric, SurfaceDistanceMetric
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric, get_confusion_matrix
from monai.metrics.rocauc import _calculate

__all__ = [
    "FiniteSurfaceDistanceMetric",
    "MacroConfusionMatrixMetric",
    "macro_confusion_metric",
    "MeanAUCMetric",
    "TopOneAccuracyMetric",
    "mean_auc",
    "per_class_metrics",
    "top1_accuracy",
]


def mean_auc(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[float, list[float]]:
    """Mean over classes of the one-vs-rest ROC AUC, skipping unknown labels and undefined classes.

    Chest X-ray papers report the mean AUC over the classes whose AUC is defined; MONAI's macro average turns
    NaN as soon as one class has no positive (or no negative) in the evaluation set, and it cannot ignore the
    unknown labels (-1, e.g. CheXpert's U-Ignore policy) of a multi-label target.

    Args:
        y_pred: scores, shape ``B C`` (probabilities or logits; AUC is rank-based).
        y: targets in {0, 1}, or -1 for unknown, shape ``B C`` (one-hot for multi-class).

    Returns:
        (mean AUC over defined classes, or NaN if none is defined; per-class AUCs with NaN where undefined).
    """
    if y_pred.ndim != 2 or y.shape != y_pred.shape:
        raise ValueError(f"mean_auc expects y_pred and y of shape B C, got {tuple(y_pred.shape)} and {tuple(y.shape)}")
    y_pred, y = y_pred.detach().float().cpu(), y.detach().float().cpu()
    per_class: list[float] = []
    for c in range(y.shape[1]):
        known = y[:, c] >= 0
        yc, pc = y[known, c], y_pred[known, c]
        if yc.numel() == 0 or yc.unique().numel() < 2:
            per_class.append(float("nan"))
            continue
        per_class.append(_calculate(pc, yc))
    defined = [a for a in per_class if not np.isnan(a)]
    return (float(np.mean(defined)) if defined else float("nan")), per_class


_CONFUSION_COLUMNS = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "f1": "f1 score",
}


def per_class_metrics(
    y_pred: torch.Tensor, y_pred_class: torch.Tensor, y: torch.Tensor, class_names: list[str]
) -> list[dict[str, float | str]]:
    """One row per class: one-vs-rest AUC (:func:`mean_auc`), sensitivity, specificity, accuracy and F1 of the
    discrete predictions (MONAI's confusion-matrix metrics over the whole set), and the class's positives; then a
    ``mean`` row, the mean over classes where each is defined (as :func:`mean_auc` and
    :class:`MacroConfusionMatrixMetric`), with the total of positives.

    Args:
        y_pred: scores, ``B C``. y_pred_class: discrete one-hot (or multi-hot) predictions, ``B C``.
        y: targets in {0, 1}, ``B C``. class_names: ``C`` names.
    """
    if not (y_pred.shape == y_pred_class.shape == y.shape) or y.ndim != 2 or y.shape[1] != len(class_names):
        raise ValueError(
            f"per_class_metrics expects scores, predictions and targets of shape B C with C = {len(class_names)} "
            f"class names, got {tuple(y_pred.shape)}, {tuple(y_pred_class.shape)} and {tuple(y.shape)}"
        )
    mean_of_auc, auc = mean_auc(y_pred, y)
    counts = get_confusion_matrix(y_pred_class.float(), y.float(), include_background=True).sum(dim=0)
    values = {k: compute_confusion_matrix_metric(name, counts) for k, name in _CONFUSION_COLUMNS.items()}
    rows: list[dict[str, float | str]] = []
    for c, name in enumerate(class_names):
        row: dict[str, float | str] = {"class": name, "auc": auc[c]}
        row.update({k: float(v[c]) for k, v in values.items()})
        row["positives"] = float(y[:, c].sum())
        rows.append(row)
    mean: dict[str, float | str] = {"class": "mean", "auc": mean_of_auc}
    mean.update({k: float(torch.nanmean(v)) for k, v in values.items()})
    mean["positives"] = float(y.sum())
    rows.append(mean)
    return rows


class MeanAUCMetric(ROCAUCMetric):
    """:class:`~monai.metrics.ROCAUCMetric` whose ``aggregate`` is :func:`mean_auc` (unknown labels ignored)."""

    def __init__(self) -> None:
        super().__init__(average="macro")

    def aggregate(self, average: str | None = None) -> float:  # type: ignore[override]
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("single-tensor y_pred and y are required")
        value, per_class = mean_auc(y_pred, y)
        if np.isnan(value):
            warnings.warn("no class has both positives and negatives: mean AUC is NaN", stacklevel=2)
        self.per_class = per_class
        return value


def macro_confusion_metric(y_pred: torch.Tensor, y: torch.Tensor, metric_name: str) -> float:
    """:class:`MacroConfusionMatrixMetric`'s value for one set of one-hot predictions and targets (``B C``), computed
    in this process only: the metric object's buffer is gathered from every rank under ``torch.distributed``, which
    a computation on rank 0 alone (a probe) must not do."""
    per_class = get_confusion_matrix(y_pred.float(), y.float(), include_background=True).sum(dim=0)
    return float(torch.nanmean(compute_confusion_matrix_metric(metric_name, per_class)))


class MacroConfusionMatrixMetric(ConfusionMatrixMetric):
    """Per-class confusion-matrix metric averaged over classes (macro), as skin-lesion papers report it.

    With ``metric_name="accuracy"`` this is the mean over classes of the one-vs-rest *binary* accuracy
    ((TP + TN) / N per class), which the true negatives of the other classes dominate: 0.83 for a 10-class model
    that is right on 14 % of the images. The s4mi skin bundles report it as ``val_ovr_accuracy`` (SRC-MT's
    "accuracy") and top-1 accuracy (:class:`TopOneAccuracyMetric`) as ``val_accuracy``. With
    ``metric_name="sensitivity"`` it is the balanced (multi-class) accuracy, the ISIC 2018 challenge's metric.

    MONAI's :class:`~monai.metrics.ConfusionMatrixMetric` with ``reduction="mean"`` averages the confusion matrix
    over classes first and computes the metric once (a micro average): for single-label multi-class data every
    error is one false negative and one false positive, so micro sensitivity, precision and F1 all equal top-1
    accuracy. SRC-MT and S2MTS2 report each metric per class (one-vs-rest) averaged over classes; this does that.
    Classes where the metric is undefined (e.g. no positive in the set for sensitivity) are skipped.

    Args:
        metric_name: one MONAI confusion-matrix metric name ("sensitivity", "specificity", "accuracy", "f1 score",
            "precision", ...).
        include_background: whether channel 0 counts as a class (True for classification).
    """

    def __init__(self, metric_name: str, include_background: bool = True) -> None:
        super().__init__(include_background=include_background, metric_name=metric_name, reduction="sum_batch")

    def aggregate(self, compute_sample: bool = False, reduction: str | None = None) -> list[torch.Tensor]:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        per_class = data.sum(dim=0)  # C 4: tp, fp, tn, fn per class over the whole set
        values = compute_confusion_matrix_metric(self.metric_name[0], per_class)
        return [torch.nanmean(values)]


def top1_accuracy(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image top-1 correctness of single-label multi-class predictions.

    Args:
        y_pred: scores (probabilities, logits or one-hot), shape ``B C``.
        y: one-hot targets, shape ``B C`` (exactly one 1 per row).

    Returns:
        ``B 1`` float tensor, 1 where ``argmax(y_pred) == argmax(y)``.

    Raises:
        ValueError: shapes differ or are not ``B C``, or a target row is not one-hot (multi-label targets have no
            top-1 accuracy; their bundles report per-finding AUC).
    """
    if y_pred.ndim != 2 or y.shape != y_pred.shape:
        raise ValueError(
            f"top-1 accuracy expects y_pred and y of shape B C, got {tuple(y_pred.shape)} and {tuple(y.shape)}"
        )
    if not bool(((y == 0) | (y == 1)).all() and (y.sum(dim=1) == 1).all()):
        raise ValueError("top-1 accuracy expects one-hot targets (one class per image); multi-label targets have none")
    return (y_pred.argmax(dim=1) == y.argmax(dim=1)).float()[:, None]


class TopOneAccuracyMetric(CumulativeIterationMetric):
    """Top-1 accuracy over the whole set: the share of images whose highest score is their class.

    The "accuracy" of a multi-class classifier as most readers take it. MONAI's ``ConfusionMatrixMetric`` has
    no such metric: its "accuracy" is per class, one-vs-rest (see :class:`MacroConfusionMatrixMetric`).
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return top1_accuracy(y_pred, y)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        return data.float().mean()


class FiniteSurfaceDistanceMetric(SurfaceDistanceMetric):
    """MONAI's average surface distance, with an image whose prediction or reference is empty left out.

    For such an (image, class) pair MONAI's :class:`~monai.metrics.HausdorffDistanceMetric` gives nan, which the
    mean skips, but :class:`~monai.metrics.SurfaceDistanceMetric` gives inf, and one of them makes the mean over a
    whole test set infinite (a 3D volume where the network misses an organ). The s4mi bundles document both
    distances as leaving those images out; this metric maps inf to nan so that they do.
    ``get_not_nans=True`` counts the images kept. Arguments as :class:`~monai.metrics.SurfaceDistanceMetric`.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:  # type: ignore[override]
        distance = super()._compute_tensor(y_pred, y, **kwargs)
        return torch.where(torch.isinf(distance), torch.full_like(distance, float("nan")), distance)
