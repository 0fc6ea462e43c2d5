"""Ignite handlers for s4mi's metrics."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers import IgniteMetricHandler

from s4mi.metrics import MeanAUCMetric

__all__ = ["MeanAUC"]


class MeanAUC(IgniteMetricHandler):
    """Mean one-vs-rest AUC over the classes where it is defined, ignoring -1 labels (see :func:`s4mi.metrics.mean_auc`).

    Args:
        output_transform: maps the engine output to ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=MeanAUCMetric(), output_transform=output_transform, save_details=False)
