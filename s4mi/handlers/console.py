"""What a training run says on the console: its length at the start, its losses each epoch."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["EpochLossLogger", "RunLengthLogger"]

logger = logging.getLogger(__name__)


class RunLengthLogger:
    """Log, when training starts, how many epochs of how many steps it will run, and the settings that decide it.

    A user who sets ``max_epochs`` for a short run learns only from this line that an epoch is, say, 500 steps of
    ``samples_per_epoch`` images (supervised bundles, a teacher stage), or as many steps as the unlabelled loader has
    batches (``epoch_length: unlabeled`` in the semi-supervised bundles), or that a pretraining stage counts
    ``pretrain_epochs`` instead.

    Args:
        settings: the config values that set the run's length, by name (e.g. ``{"samples_per_epoch": 2000}``),
            printed as they are.
        name: what runs (the stage), for the line.
    """

    def __init__(self, settings: Mapping[str, Any] | None = None, name: str = "training") -> None:
        self.settings = dict(settings or {})
        self.name = name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epochs, steps = engine.state.max_epochs, engine.state.epoch_length
        total = epochs * steps if epochs is not None and steps is not None else None
        line = f"s4mi: {self.name}: {epochs} epochs x {steps} steps per epoch ({total} steps)"
        if self.settings:
            line += "; set by " + ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        logger.info(line)


class EpochLossLogger:
    """Log each epoch's mean losses and loss weight on the console: ``Epoch 3/12: loss 0.41, loss_sup 0.38, ...``.

    MONAI's ``StatsHandler`` with ``iteration_log=False`` prints only the trainer's metrics at an epoch's end, and
    a trainer has none, so the losses reached only TensorBoard; Ignite's ``ProgressBar`` shows the last step's loss
    and is gone once the epoch ends. This keeps the running sums of the engine's output keys (``loss``,
    ``loss_sup``, ``loss_unsup`` and the ramped ``unsup_weight`` of :mod:`s4mi.engines`, ``jcl_lambda`` of
    MoCo/JCL) and logs their means over the epoch's steps. A key the output lacks is read from ``engine.state``
    (the engine keeps its ramped weight there), else left out. After a resume in the middle of an epoch, that
    epoch's means cover the steps run since.

    Args:
        keys: the output keys to average, in the order printed.
        name: what runs (the stage), for the line.
    """

    def __init__(
        self,
        keys: Sequence[str] = ("loss", "loss_sup", "loss_unsup", "unsup_weight", "jcl_lambda"),
        name: str = "training",
    ) -> None:
        self.keys = list(keys)
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _iteration(self, engine: Engine) -> None:
        output: Any = engine.state.output
        if isinstance(output, (list, tuple)) and output:  # a decollated batch: the loss is in every item
            output = output[0]
        output = output if isinstance(output, Mapping) else {}
        for k in self.keys:
            v = output.get(k, getattr(engine.state, k, None))
            if isinstance(v, torch.Tensor):
                v = v.detach().float().mean().item()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
                self._counts[k] = self._counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        """The current epoch's means so far, by key, in the order of ``keys``."""
        return {k: self._sums[k] / self._counts[k] for k in self.keys if self._counts.get(k)}

    def __call__(self, engine: Engine) -> None:
        means = self.means()
        if not means:
            return
        steps = max(self._counts.values())
        parts = ", ".join(f"{k} {v:.4g}" for k, v in means.items())
        logger.info(
            f"s4mi: {self.name}: epoch {engine.state.epoch}/{engine.state.max_epochs}: {parts} (means of {steps} steps)"
        )
