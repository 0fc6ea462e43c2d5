"""Append every validation's metrics to a JSON-lines file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from ignite.engine import Engine, Events

if TYPE_CHECKING:
    from monai.engines import Workflow

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Write ``{"epoch", "wall_s", <metric>: value, ...}`` per evaluator run to ``<folder>/<name>``.

    MONAI's :class:`~monai.handlers.MetricsSaver` keeps only the latest values; benchmarks and learning curves
    need the history. Under a :class:`~monai.handlers.ValidationHandler` the evaluator's epoch is the trainer's.
    The file is appended and flushed, so a killed run keeps what it had measured.

    Args:
        folder: output folder (made if missing).
        name: file name.
        output_keys: keys of the engine's iteration output (a trainer's ``loss``, ...) whose epoch means go in each
            row too (for a trainer, which has no metric of its own but the probes').
    """

    def __init__(self, folder: str | os.PathLike, name: str = "metrics.jsonl", output_keys: Sequence[str] = ()) -> None:
        self.path = Path(folder) / name
        self.output_keys = list(output_keys)
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._start = time.perf_counter()

    def attach(self, engine: Workflow) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.output_keys:
            engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._counts = {}, {}

    def _accumulate(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, dict):
            return
        for k in self.output_keys:
            v = output.get(k)
            if v is None:
                continue
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
            self._counts[k] = self._counts.get(k, 0) + 1

    def __call__(self, engine: Engine) -> None:
        row: dict[str, float | int | str] = {
            "epoch": int(engine.state.epoch),
            "wall_s": round(time.perf_counter() - self._start, 3),
        }
        row.update({k: self._sums[k] / self._counts[k] for k in self.output_keys if self._counts.get(k)})
        for k, v in engine.state.metrics.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
