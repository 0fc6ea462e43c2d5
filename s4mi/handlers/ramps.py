"""Loss-weight ramps (consistency/unsupervised weights) and the Ignite handler that drives them.

A ramp is a pure callable of the 0-based step ``t`` (iteration or epoch count) that returns a weight. The
handler puts ``ramp(t)`` in ``engine.state.<name>`` at the start of each iteration (or epoch), so the process
function of step ``t`` reads the weight of step ``t``.

Two kinds of "delayed start" appear in the papers s4mi follows, and they are different:

- a *shifted* ramp starts its curve at ``start``: ``SigmoidRamp(1.0, 30, start=20)`` is 0 before step 20 and
  reaches 1.0 at step 50;
- a *gated* ramp keeps the curve where it is and zeroes it before ``on_from``:
  ``GatedRamp(SigmoidRamp(1.0, 30), on_from=21)`` is 0 up to step 20, then jumps to ``exp(-5 * 0.3**2)``
  at step 21 and reaches 1.0 at step 30. This is SRC-MT's schedule (consistency computed with
  ``sigmoid_rampup(epoch, 30)`` but added to the loss only ``if epoch > 20``, 0-based epochs).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ignite.engine import Engine, Events
from ignite.handlers.state_param_scheduler import LambdaStateScheduler

__all__ = [
    "ConstantRamp",
    "CosineRampDown",
    "GatedRamp",
    "LinearRamp",
    "Ramp",
    "RampHandler",
    "RampScheduler",
    "SigmoidRamp",
    "WarmupCosine",
    "attach_ramp",
    "ramp_from_config",
]

_START_EVENTS = {"iteration": Events.ITERATION_STARTED, "epoch": Events.EPOCH_STARTED}


class Ramp(ABC):
    """A weight as a function of the 0-based step ``t``.

    Ramps are stateless: their configuration comes from code or a bundle config, like a learning-rate
    schedule's. ``state_dict`` is empty so that a scheduler holding a ramp checkpoints only plain values (Ignite's
    ``LambdaStateScheduler.state_dict`` would otherwise pickle the ramp object itself, which
    ``torch.load(..., weights_only=True)``, as MONAI's ``CheckpointLoader`` calls it, refuses to load).
    """

    @abstractmethod
    def __call__(self, t: int) -> float:
        """The weight at step ``t``."""

    def state_dict(self) -> dict[str, Any]:
        """Empty: a ramp has no state."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # noqa: B027 - deliberately a no-op
        """Nothing to load: a ramp has no state."""


def _progress(t: float, start: float, length: float) -> float:
    """Fraction of the ramp done at ``t``, clipped to [0, 1] (1 at and after ``start`` when ``length`` is 0)."""
    if length <= 0:
        return 1.0
    return min(max((t - start) / length, 0.0), 1.0)


@dataclass(frozen=True)
class _ShapedRamp(Ramp):
    value: float
    length: int
    start: int = 0

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"ramp length must be >= 0, got {self.length}")


@dataclass(frozen=True)
class ConstantRamp(Ramp):
    """``value`` at every step."""

    value: float

    def __call__(self, t: int) -> float:
        return float(self.value)


@dataclass(frozen=True)
class LinearRamp(_ShapedRamp):
    """0 before ``start``, rising linearly to ``value`` at ``start + length``, then ``value``.

    S2MTS2's fine-tuning weight ``w = epoch / epochs`` is ``LinearRamp(1.0, epochs)`` by epoch; its JCL weight
    ``lambda = 2 (epoch + 1) / epochs`` is ``LinearRamp(2.0, epochs, start=-1)``.

    Args:
        value: the final weight.
        length: steps from ``start`` to reaching ``value`` (0: a step from 0 to ``value`` at ``start``).
        start: the step where the ramp begins (the weight there is 0); earlier steps get 0.
    """

    def __call__(self, t: int) -> float:
        if t < self.start:
            return 0.0
        return float(self.value) * _progress(t, self.start, self.length)


@dataclass(frozen=True)
class SigmoidRamp(_ShapedRamp):
    """The "sigmoid-shaped" ramp-up ``value * exp(-5 (1 - p)^2)``, ``p = clip((t - start) / length, 0, 1)``.

    From Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning" (ICLR 2017), used by Mean Teacher
    (Tarvainen & Valpola, NeurIPS 2017), SRC-MT (Liu et al., TMI 2020; by epoch over 30 epochs, see
    :class:`GatedRamp`) and S4MI's cross teaching (``0.1 exp(-5 (1 - t/L)^2)``: ``SigmoidRamp(0.1, L)``).
    Note the weight is ``value * exp(-5)`` (not 0) at ``start`` itself; it is 0 only before ``start``.

    Args:
        value: the final weight.
        length: steps from ``start`` to reaching ``value`` (0: ``value`` from ``start`` on).
        start: the step where the ramp begins; earlier steps get 0.
    """

    def __call__(self, t: int) -> float:
        if t < self.start:
            return 0.0
        p = _progress(t, self.start, self.length)
        return float(self.value) * math.exp(-5.0 * (1.0 - p) ** 2)


@dataclass(frozen=True)
class CosineRampDown(_ShapedRamp):
    """``value`` before ``start``, then ``value * (1 + cos(pi p)) / 2`` down to 0 at ``start + length``.

    The cosine ramp-down of Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) and SGDR (Loshchilov & Hutter,
    ICLR 2017).

    Args:
        value: the initial weight.
        length: steps from ``start`` to reaching 0 (0: a drop to 0 at ``start``).
        start: the step where the ramp-down begins.
    """

    def __call__(self, t: int) -> float:
        if t < self.start:
            return float(self.value)
        p = _progress(t, self.start, self.length)
        return float(self.value) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass(frozen=True)
class WarmupCosine(Ramp):
    """A linear warm-up from ``warmup_start`` to ``base`` over ``warmup`` steps, then a half cosine from ``base`` to
    ``final`` at step ``length``; ``final`` after.

    DINO's ``cosine_scheduler`` (Caron et al. 2021), by step: the learning rate (warm-up, then down to ``min_lr``),
    the weight decay (0.04 up to 0.4), the teacher momentum (0.996 up to 1) and, with ``base == final``, the teacher
    temperature's warm-up (0.04 to 0.07 over 30 epochs, then constant). As there (``np.linspace`` with its end
    point), the last warm-up step already reads ``base``.

    Args:
        base: the value after the warm-up.
        final: the value at ``length``.
        length: total steps (warm-up included).
        warmup: warm-up steps (0: none).
        warmup_start: the value at step 0 of the warm-up.
    """

    base: float
    final: float
    length: int
    warmup: int = 0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        if self.length < 1 or not 0 <= self.warmup <= self.length:
            raise ValueError(
                f"need 0 <= warmup <= length and length >= 1, got warmup={self.warmup}, length={self.length}"
            )

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            if self.warmup == 1:
                return float(self.base)
            return float(self.warmup_start + (self.base - self.warmup_start) * t / (self.warmup - 1))
        n = self.length - self.warmup
        if t >= self.length or n <= 0:
            return float(self.final)
        i = t - self.warmup
        return float(self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * i / n)))


@dataclass(frozen=True)
class GatedRamp(Ramp):
    """``ramp(t)`` from step ``on_from`` on, 0 before: the ramp is not shifted, only switched on late.

    SRC-MT (Liu et al., TMI 2020) computes its consistency weight with a 30-epoch sigmoid ramp from epoch 0 but
    adds the consistency terms only ``if epoch > 20``: ``GatedRamp(SigmoidRamp(1.0, 30), on_from=21)`` by epoch.

    Args:
        ramp: the ramp to gate.
        on_from: the first step at which the weight is ``ramp(t)`` rather than 0.
    """

    ramp: Callable[[int], float]
    on_from: int

    def __call__(self, t: int) -> float:
        return float(self.ramp(t)) if t >= self.on_from else 0.0


_KINDS: dict[str, type[_ShapedRamp]] = {"linear": LinearRamp, "sigmoid": SigmoidRamp, "cosine_down": CosineRampDown}


def ramp_from_config(
    kind: Literal["constant", "linear", "sigmoid", "cosine_down"],
    value: float,
    length: int = 0,
    start: int = 0,
    on_from: int = 0,
) -> Ramp:
    """Build a ramp from plain config values.

    Args:
        kind: ``"constant"``, ``"linear"``, ``"sigmoid"`` or ``"cosine_down"``.
        value: the weight the ramp reaches (the initial weight for ``"cosine_down"``).
        length: ramp length in steps (unused for ``"constant"``).
        start: the step where the ramp's curve begins (a shifted start, see the module docstring).
        on_from: if > 0, gate the ramp to 0 before this step without shifting it (SRC-MT's delayed start:
            ``ramp_from_config("sigmoid", 1.0, 30, on_from=21)`` by epoch).
    """
    ramp: Ramp
    if kind == "constant":
        ramp = ConstantRamp(value)
    elif kind in _KINDS:
        ramp = _KINDS[kind](value, length, start)
    else:
        raise ValueError(f"unknown ramp kind {kind!r}; expected 'constant', {', '.join(map(repr, _KINDS))}")
    return GatedRamp(ramp, on_from) if on_from > 0 else ramp


class RampScheduler(LambdaStateScheduler):
    """Ignite's ``LambdaStateScheduler`` evaluating ``ramp(t)`` with ``t`` read from the engine.

    Ignite's state schedulers count the events they see (``event_index`` is incremented *before* the lambda is
    called, so the lambda gets 1 at the first event). Here ``event_index`` is set from the engine first, so
    the ramp gets ``t = iteration - 1`` (``every="iteration"``, at ``ITERATION_STARTED``) or ``t = epoch - 1``
    (``"epoch"``, at ``EPOCH_STARTED``): 0 at the first step, and the right step after a resume even if this
    scheduler's state was not checkpointed. Its ``state_dict`` still round-trips (and holds only plain values).

    Args:
        ramp: the ramp (any callable of the 0-based step; give a :class:`Ramp` to keep checkpoints plain).
        param_name: the ``engine.state`` attribute to set.
        every: ``"iteration"`` or ``"epoch"``.
        save_history: also append each value to ``engine.state.param_history[param_name]``.
    """

    def __init__(
        self,
        ramp: Callable[[int], float],
        param_name: str,
        every: Literal["iteration", "epoch"] = "iteration",
        save_history: bool = False,
    ) -> None:
        if every not in _START_EVENTS:
            raise ValueError(f"every must be 'iteration' or 'epoch', got {every!r}")
        super().__init__(ramp, param_name, save_history=save_history, create_new=True)
        self.every = every

    def _steps_done(self, engine: Engine) -> int:
        return engine.state.iteration if self.every == "iteration" else engine.state.epoch

    def attach(self, engine: Engine, event: Any = None) -> None:
        """Set ``engine.state.<param_name>`` at the start of each iteration/epoch (``event`` must be None).

        The attribute is set to the weight of the next step right away, so it is a number before the run too.

        Raises:
            ValueError: if ``engine.state`` already has the attribute (another ramp with the same name).
        """
        if event is not None:
            raise ValueError("RampScheduler fires at the start of each step set by `every`; `event` is unused")
        super().attach(engine, _START_EVENTS[self.every])
        setattr(engine.state, self.param_name, float(self.lambda_obj(self._steps_done(engine))))  # type: ignore[arg-type]

    def __call__(self, engine: Engine) -> None:
        # The parent increments event_index then evaluates: leave it at the 1-based count of this step.
        self.event_index = self._steps_done(engine) - 1
        super().__call__(engine)

    def get_param(self) -> float:
        return float(self.lambda_obj(self.event_index - 1))  # type: ignore[arg-type]


def attach_ramp(
    engine: Engine,
    ramp: Callable[[int], float],
    name: str,
    every: Literal["iteration", "epoch"] = "iteration",
) -> RampScheduler:
    """Put ``ramp(t)`` in ``engine.state.<name>`` at the start of every iteration (or epoch).

    ``t`` is 0-based: ``iteration - 1`` or ``epoch - 1``, so the first iteration reads ``ramp(0)``.

    Returns:
        the scheduler (an Ignite ``LambdaStateScheduler``); it may go in a checkpoint's ``save_dict``, though a
        resumed run gets the right values from the engine's counters alone.
    """
    scheduler = RampScheduler(ramp, name, every=every)
    scheduler.attach(engine)
    return scheduler


class RampHandler:
    """A ramp as a handler for a MONAI trainer's handler list (``RampHandler(...).attach(engine)``).

    Example (bundle config)::

        {"_target_": "s4mi.handlers.RampHandler", "name": "unsup_weight", "every": "epoch",
         "ramp": {"_target_": "s4mi.handlers.SigmoidRamp", "value": 1.0, "length": 30}}

    Args:
        ramp: the ramp, a callable of the 0-based step.
        name: the ``engine.state`` attribute the process function reads.
        every: ``"iteration"`` or ``"epoch"``.

    Attributes:
        scheduler: the :class:`RampScheduler` doing the work; ``state_dict``/``load_state_dict`` are its.
    """

    def __init__(
        self,
        ramp: Callable[[int], float],
        name: str = "unsup_weight",
        every: Literal["iteration", "epoch"] = "iteration",
    ) -> None:
        self.ramp = ramp
        self.name = name
        self.scheduler = RampScheduler(ramp, name, every=every)

    def attach(self, engine: Engine) -> None:
        """Attach the scheduler to ``engine``."""
        self.scheduler.attach(engine)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (plain values only)."""
        return dict(self.scheduler.state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict`."""
        self.scheduler.load_state_dict(state_dict)
