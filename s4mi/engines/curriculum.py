"""Curricular self-supervised pretraining: one backbone trained on a sequence of pretext tasks, stage after stage."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from s4mi.engines.base import SSLTrainer
from s4mi.keys import Keys
from s4mi.networks.features import unwrap_network

__all__ = ["CurriculumTrainer", "StageCosine", "curriculum_epochs", "parse_curriculum", "stage_at", "stage_ends"]


def parse_curriculum(curriculum: Any) -> list[tuple[str, int]]:
    """A curriculum as ``[(task, epochs), ...]``.

    Accepts a list of ``[task, epochs]`` pairs (the bundle's ``curriculum`` key, e.g. ``[["rotation", 10],
    ["contrastive", 20]]``) or the same as one string, stages joined by ``+`` and each ``task:epochs``
    (``"rotation:10+contrastive:20"``: a command-line and ``s4mi benchmark`` method variant, where commas separate
    overrides).

    Raises:
        ValueError: empty, a stage is not a task and a positive epoch count (the message names it).
    """
    if isinstance(curriculum, str):
        stages: list[Any] = []
        for part in curriculum.split("+"):
            task, sep, epochs = part.strip().partition(":")
            if not sep:
                raise ValueError(f"curriculum stage {part!r} must be task:epochs (e.g. rotation:10)")
            stages.append((task.strip(), epochs.strip()))
    else:
        stages = list(curriculum or [])
    if not stages:
        raise ValueError("the curriculum is empty: give at least one [task, epochs] stage")
    out = []
    for i, stage in enumerate(stages):
        if isinstance(stage, (Mapping, str)) or len(stage) != 2:
            raise ValueError(f"curriculum stage {i} is {stage!r}; each stage is [task, epochs]")
        task, epochs = stage
        try:
            n = int(epochs)
        except (TypeError, ValueError):
            raise ValueError(f"curriculum stage {i} ({task}): epochs must be an integer, got {epochs!r}") from None
        if n < 1 or n != float(epochs):
            raise ValueError(f"curriculum stage {i} ({task}): epochs must be a positive integer, got {epochs!r}")
        out.append((str(task), n))
    return out


def curriculum_epochs(curriculum: Any) -> int:
    """The curriculum's total epochs (the pretraining's ``max_epochs``)."""
    return sum(n for _, n in parse_curriculum(curriculum))


def stage_ends(curriculum: Any) -> list[int]:
    """The 1-based epoch at which each stage ends (cumulative epochs)."""
    ends, total = [], 0
    for _, n in parse_curriculum(curriculum):
        total += n
        ends.append(total)
    return ends


def stage_at(curriculum: Any, epoch: int) -> int:
    """Index of the stage that 0-based epoch ``epoch`` belongs to (the last stage past the end)."""
    for i, end in enumerate(stage_ends(curriculum)):
        if epoch < end:
            return i
    return len(stage_ends(curriculum)) - 1


class StageCosine:
    """A learning-rate factor for :class:`torch.optim.lr_scheduler.LambdaLR` that restarts with each stage: cosine
    from 1 to ``final`` over the stage's epochs, ``0.5 (1 + cos(pi e / L))`` scaled to ``[final, 1]`` at the stage's
    0-based epoch ``e`` of ``L``. A plain object (not a lambda), so LambdaLR's ``state_dict`` keeps it.

    Args:
        curriculum: see :func:`parse_curriculum`.
        final: the factor a stage would reach at its end.
    """

    def __init__(self, curriculum: Any, final: float = 0.0) -> None:
        self.lengths = [n for _, n in parse_curriculum(curriculum)]
        self.final = float(final)

    def __call__(self, epoch: int) -> float:
        start = 0
        for length in self.lengths:
            if epoch < start + length:
                break
            start += length
        else:
            return self.final
        cos = 0.5 * (1.0 + math.cos(math.pi * (epoch - start) / length))
        return self.final + (1.0 - self.final) * cos


class CurriculumTrainer(SSLTrainer):
    """Trains one backbone on a curriculum of self-supervised pretext tasks, each stage from the previous one's
    weights (de Andres Tame et al., arXiv 2301.10687; the curriculum of arXiv 2112.12086).

    One run covers every stage: epoch ``e`` (0-based) trains the task of the stage it falls in (:func:`stage_at`),
    so the trainer's epoch counter says where a resumed run is and a run killed inside stage 2 resumes inside
    stage 2 from its checkpoint. Per iteration of stage ``s`` with task ``t``:

    1. ``x_1`` (and ``x_2`` for a task reading two views): views of each image, no label;
    2. ``out = network(t, x_1, x_2)``: the task builds its input and target (a rotation, a shuffled tiling, a masked
       image, two views) and its loss from the shared backbone and its own head
       (:class:`s4mi.networks.pretext.PretextTask`);
    3. backward and optimizer step (:class:`SSLTrainer`). Only the backbone and task ``t``'s head get gradients;
       the other heads keep their weights (their parameters have no gradient, so Adam and SGD skip them).

    At a stage's first epoch (but the first stage's) the optimizer's per-parameter state (Adam's moments) is
    cleared with ``reset_optimizer``: each stage starts from the previous stage's weights, not its optimizer. The
    learning rate restarts per stage with :class:`StageCosine`. At a stage's last epoch, with ``stage_dir``, the
    backbone (keyed for the DenseNet classifier) is written to ``<stage_dir>/stage<i>_<task>.pt`` atomically; the
    state also holds ``stage`` (0-based) and ``engine.state.metrics["stage"]`` (so metric rows say their stage),
    and the output ``loss_<task>`` and the task's extras as ``<task>_<name>`` (a rotation or jigsaw accuracy, the
    masked share).

    Args:
        curriculum: ``[[task, epochs], ...]`` or ``"task:epochs+..."`` (:func:`parse_curriculum`); every task must
            be one of the network's.
        view_keys: batch keys of the views (one, or two when a task contrasts views).
        reset_optimizer: clear the optimizer's state at each stage start.
        stage_dir: folder of the per-stage backbone files (None: none written).
        args, kwargs: :class:`SSLTrainer`'s. ``network`` is a :class:`s4mi.networks.pretext.CurriculumNetwork`
            (possibly in DDP); ``max_epochs`` must be the curriculum's total (:func:`curriculum_epochs`).

    Raises:
        ValueError: ``max_epochs`` differs from the curriculum's total, a task is not the network's, or a task needs
            two views and ``view_keys`` names one.
    """

    def __init__(
        self,
        *args: Any,
        curriculum: Any,
        view_keys: Sequence[str] = ("image_v0", "image_v1"),
        reset_optimizer: bool = True,
        stage_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.curriculum = parse_curriculum(curriculum)
        total = sum(n for _, n in self.curriculum)
        if self.state.max_epochs != total:
            raise ValueError(
                f"max_epochs {self.state.max_epochs} differs from the curriculum's {total} epochs ({self.curriculum})"
            )
        net = unwrap_network(self.network)
        tasks = getattr(net, "tasks", {})
        missing = [t for t, _ in self.curriculum if t not in tasks]
        if missing:
            raise ValueError(f"curriculum task(s) {missing} are not the network's (it has {sorted(tasks)})")
        self.view_keys = list(view_keys)
        two = [t for t, _ in self.curriculum if tasks[t].views == 2]
        if two and len(self.view_keys) < 2:
            raise ValueError(f"task(s) {two} contrast two views, but view_keys names {self.view_keys}")
        self.reset_optimizer = reset_optimizer
        self.stage_dir = None if stage_dir is None else Path(stage_dir)
        self.starts = [end - n for end, (_, n) in zip(stage_ends(self.curriculum), self.curriculum)]
        self.state.stage = 0
        self.add_event_handler(Events.EPOCH_STARTED, self._stage_started)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._stage_completed)

    @property
    def task(self) -> str:
        """The current stage's task."""
        return self.curriculum[int(self.state.stage)][0]

    def _stage_started(self, engine: CurriculumTrainer) -> None:
        epoch = int(engine.state.epoch) - 1  # 0-based epoch that starts
        stage = stage_at(self.curriculum, epoch)
        engine.state.stage = stage
        engine.state.metrics["stage"] = stage
        # only before the stage's first step: a run resumed in the middle of that epoch has the state it stepped with
        first_step = engine.state.epoch_length is None or engine.state.iteration <= epoch * engine.state.epoch_length
        if self.reset_optimizer and stage > 0 and epoch == self.starts[stage] and first_step:
            engine.optimizer.state.clear()

    def _stage_completed(self, engine: CurriculumTrainer) -> None:
        engine.state.metrics["stage"] = int(engine.state.stage)
        stage = int(engine.state.stage)
        if self.stage_dir is not None and int(engine.state.epoch) == stage_ends(self.curriculum)[stage]:
            from s4mi.handlers.pretrained import save_pretrained_backbone

            save_pretrained_backbone(engine.network, self.stage_dir / f"stage{stage}_{self.task}.pt")

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The views on the device, as ``x_1`` (and ``x_2``).

        Raises:
            KeyError: a view is missing.
            LabelLeakError: the batch holds a label key (pretraining is self-supervised).
        """
        self.refuse_labels(batchdata, "pretraining")
        out = {}
        for key, name in zip(self.view_keys, (Keys.X_1, Keys.X_2)):
            out[name], _ = self.prepare_stream(batchdata, key, None, "pretraining")
        return out

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[Keys.X_1]}

    def train_step(self, engine: CurriculumTrainer, batch: dict[str, torch.Tensor]) -> None:
        task = engine.task
        result = engine.network(task, batch[Keys.X_1], batch.get(Keys.X_2))
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out = engine.state.output
        out[Keys.LOSS] = result["loss"]
        out[f"loss_{task}"] = result["loss"].detach()
        out.update({f"{task}_{k}": v.detach() for k, v in result.items() if k != "loss"})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
