"""What a training run says on the console: its length at the start, its losses each epoch."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["RunLengthLogger"]

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
