"""Append every validation's metrics to a JSON-lines file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    """

    def __init__(self, folder: str | os.PathLike, name: str = "metrics.jsonl") -> None:
        self.path = Path(folder) / name
        self._start = time.perf_counter()

    def attach(self, engine: Workflow) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        row: dict[str, float | int | str] = {
            "epoch": int(engine.state.epoch),
            "wall_s": round(time.perf_counter() - self._start, 3),
        }
        for k, v in engine.state.metrics.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
