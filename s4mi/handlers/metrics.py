"""Ignite handlers for s4mi's metrics."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers import IgniteMetricHandler

from s4mi.metrics import MacroConfusionMatrixMetric, MeanAUCMetric

__all__ = ["MacroConfusionMatrix", "MeanAUC"]


class MeanAUC(IgniteMetricHandler):
    """Mean one-vs-rest AUC over the classes where it is defined, ignoring -1 labels (see :func:`s4mi.metrics.mean_auc`).

    Args:
        output_transform: maps the engine output to ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=MeanAUCMetric(), output_transform=output_transform, save_details=False)


class MacroConfusionMatrix(IgniteMetricHandler):
    """Macro (per-class, then averaged) confusion-matrix metric; see :class:`s4mi.metrics.MacroConfusionMatrixMetric`.

    Args:
        metric_name: e.g. ``"sensitivity"``, ``"specificity"``, ``"accuracy"``, ``"f1 score"``.
        include_background: whether channel 0 counts as a class.
        output_transform: maps the engine output to one-hot ``(y_pred, y)``.
    """

    def __init__(
        self, metric_name: str, include_background: bool = True, output_transform: Callable = lambda x: x
    ) -> None:
        metric_fn = MacroConfusionMatrixMetric(metric_name=metric_name, include_background=include_background)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)
