"""Ignite handlers for s4mi's metrics."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler, from_engine

from s4mi.metrics import (
    FiniteSurfaceDistanceMetric,
    MacroConfusionMatrixMetric,
    MeanAUCMetric,
    TopOneAccuracyMetric,
    per_class_metrics,
)

__all__ = [
    "MacroConfusionMatrix",
    "MeanAUC",
    "PerClassMetrics",
    "PerSourceMetrics",
    "SurfaceDistance",
    "TopOneAccuracy",
]


class SurfaceDistance(IgniteMetricHandler):
    """MONAI's :class:`~monai.handlers.SurfaceDistance` on :class:`s4mi.metrics.FiniteSurfaceDistanceMetric`: an image
    with an empty prediction or reference is left out of the mean instead of making it infinite.

    Args:
        include_background: whether channel 0 counts.
        symmetric: the mean of both directions (True) or prediction to reference only (False, medpy's asd).
        distance_metric: ``"euclidean"``, ``"chessboard"`` or ``"taxicab"``.
        output_transform: maps the engine output to one-hot ``(y_pred, y)``.
        save_details: keep the per-image values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = False,
        symmetric: bool = False,
        distance_metric: str = "euclidean",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = FiniteSurfaceDistanceMetric(
            include_background=include_background, symmetric=symmetric, distance_metric=distance_metric
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


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


class TopOneAccuracy(IgniteMetricHandler):
    """Top-1 accuracy of a single-label multi-class classifier; see :class:`s4mi.metrics.TopOneAccuracyMetric`.

    Args:
        output_transform: maps the engine output to ``(y_pred, y)``: scores and one-hot targets, ``C`` per item.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=TopOneAccuracyMetric(), output_transform=output_transform, save_details=False)


class PerSourceMetrics:
    """Per-image metrics averaged per test set, and the plain mean of the sets, added to ``engine.state.metrics``.

    Polyp papers report per-image Dice and IoU on each PraNet test set (Kvasir, CVC-ClinicDB, CVC-ColonDB, ETIS,
    CVC-300) and the plain mean of the five, not the mean over all images, which the largest set would dominate.
    The PraNet adapter (``s4mi data adapt pranet``) tags each test item with ``"source"``. This handler reads the
    per-image scores MONAI's metric handlers keep (``engine.state.metric_details``, ``save_details=True``, their
    default) and each batch's ``source`` values, and adds ``<metric>/<set>`` for every set and
    ``<metric>/mean_of_sets``. With one source (or none: the phantoms) it adds nothing. Images where a metric is NaN
    (an empty ground truth under MONAI's ``ignore_empty``) are left out of their set's mean, as MONAI's mean does.

    List it before :class:`MetricsLogger` in the evaluator's handlers so the logger records the new entries.

    Args:
        metric_names: the evaluator's metric names to split, e.g. ``["val_mean_dice", "val_mean_iou"]``.
        source_key: the batch key holding each item's set.
    """

    def __init__(self, metric_names: list[str], source_key: str = "source") -> None:
        self.metric_names = list(metric_names)
        self.source_key = source_key
        self._sources: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._sources.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._summarise)

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        if isinstance(batch, dict):  # a collated batch
            image = batch.get("image")
            n = len(image) if image is not None else 0
            sources = batch.get(self.source_key, [""] * n)
        else:  # MONAI decollates the batch after the iteration: one dict per item
            sources = [item.get(self.source_key, "") for item in batch]  # type: ignore[union-attr]
        self._sources.extend(str(s) for s in sources)

    def _summarise(self, engine: Engine) -> None:
        names = list(dict.fromkeys(self._sources))
        if len(names) < 2:
            return
        details = getattr(engine.state, "metric_details", {}) or {}
        for metric in self.metric_names:
            if metric not in details:
                raise KeyError(
                    f"PerSourceMetrics: no per-image scores for {metric!r} (has {sorted(details)}); the metric "
                    "handler must keep them (save_details=True)"
                )
            scores = torch.as_tensor(details[metric], dtype=torch.float64).reshape(len(self._sources), -1)
            if scores.shape[0] != len(self._sources):
                raise ValueError(f"{metric}: {scores.shape[0]} per-image scores for {len(self._sources)} images")
            per_image = scores.nanmean(dim=1)
            means = []
            for name in names:
                rows = torch.tensor([s == name for s in self._sources])
                value = float(per_image[rows].nanmean())
                engine.state.metrics[f"{metric}/{name}"] = value
                means.append(value)
            engine.state.metrics[f"{metric}/mean_of_sets"] = float(torch.tensor(means).nanmean())


class PerClassMetrics:
    """Each class's one-vs-rest AUC, sensitivity, specificity, accuracy and F1 over an evaluation, and their macro
    means, written to a CSV: one row per class (with its positives), then ``mean``.

    The macro metrics of the skin tables (:class:`MeanAUC`, :class:`MacroConfusionMatrix`) average over classes and
    keep no per-class value; SRC-MT and SRCL report ISIC 2018 per class as well. The rows are those of
    :func:`s4mi.metrics.per_class_metrics`, so the ``mean`` row equals the evaluator's macro metrics. The file is
    replaced whole at each epoch end (written beside it, then moved into place).

    Args:
        class_names: one name per output channel, in channel order.
        folder: where the CSV goes.
        file_name: its name.
        output_transform: maps the engine output to ``(scores, discrete one-hot predictions, one-hot targets)``;
            default ``from_engine(["pred", "pred_class", "label"])``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        folder: str | os.PathLike,
        file_name: str = "per_class_metrics.csv",
        output_transform: Callable | None = None,
    ) -> None:
        self.class_names = [str(c) for c in class_names]
        self.path = Path(folder) / file_name
        self.output_transform = output_transform or from_engine(["pred", "pred_class", "label"])
        self.rows: list[dict[str, float | str]] = []
        self._parts: list[list[torch.Tensor]] = [[], [], []]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._parts = [[], [], []]

    def _collect(self, engine: Engine) -> None:
        for part, values in zip(self._parts, self.output_transform(engine.state.output)):
            batch = torch.stack([torch.as_tensor(v) for v in values]) if isinstance(values, list) else values
            part.append(torch.as_tensor(batch).detach().float().cpu().reshape(len(batch), -1))
        channels = self._parts[0][-1].shape[1]
        if channels != len(self.class_names):
            raise ValueError(
                f"PerClassMetrics: the network gives {channels} class score(s) but class_names names "
                f"{len(self.class_names)} ({self.class_names}); set the bundle's class_names to one name per class"
            )

    def _write(self, engine: Engine) -> None:
        if not self._parts[0]:
            return
        scores, predicted, target = (torch.cat(part) for part in self._parts)
        self.rows = per_class_metrics(scores, predicted, target, self.class_names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
        logging.getLogger(__name__).info(
            "per-class AUC: %s", ", ".join(f"{r['class']} {float(r['auc']):.3f}" for r in self.rows)
        )
