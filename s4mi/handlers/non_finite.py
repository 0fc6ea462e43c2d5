"""Stop training on a non-finite loss or gradient before it reaches the weights, and never save non-finite weights."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import TerminateOnNan
from monai.engines.utils import IterationEvents

from s4mi.keys import Keys

__all__ = ["NonFiniteError", "NonFiniteGuard", "check_finite_checkpoint", "loss_terms", "non_finite_entries"]


class NonFiniteError(FloatingPointError):
    """A loss, a gradient or a tensor about to be saved is NaN or infinite."""


def loss_terms(output: Any) -> dict[str, Any]:
    """The loss terms of an engine's output: ``loss`` and every ``loss_*`` key (the parts before weighting).

    Ignite's ``TerminateOnNan`` checks its whole output by default; an s4mi output also holds logits, features and
    pseudo labels, whose values are none of its business (a masked-out pseudo label may be NaN by design). MONAI's
    ``decollate=True`` output (a list of per-item dicts) carries the loss in every item: the first is read.
    """
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if not isinstance(output, Mapping):
        return {}
    return {k: v for k, v in output.items() if isinstance(k, str) and (k == Keys.LOSS or k.startswith("loss_"))}


def _is_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value.detach()).all())
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _shown(value: Any) -> Any:
    """A loss term as a number for a message (the mean of a tensor that is not a scalar)."""
    return value.detach().float().mean().item() if isinstance(value, torch.Tensor) else value


class NonFiniteGuard(TerminateOnNan):
    """Ignite's :class:`~ignite.handlers.TerminateOnNan` on the loss terms, checked before the backward pass, plus a
    gradient check before the optimizer step; it raises :class:`NonFiniteError` naming the term (or parameter), the
    iteration and the epoch.

    ``TerminateOnNan`` runs at ``ITERATION_COMPLETED`` and only asks the engine to stop: by then the optimizer has
    stepped on the NaN gradient, and the handlers of that same event (a mid-epoch resume checkpoint) still run and
    would save the NaN weights over the last good ones. Here each term goes through ``TerminateOnNan`` (its
    ``output_transform`` picks that term) at MONAI's ``LOSS_COMPLETED``, and the iteration is aborted by an exception
    before ``backward``, so the weights, the optimizer state and every file on disk stay as they were after the last
    good step; the run can be resumed from its last checkpoint (with a lower ``learning_rate`` override, which
    :class:`~s4mi.handlers.ResumeLoader` applies). A finite loss can still give a non-finite gradient (``sqrt`` at
    0, an overflow): with ``check_gradients`` the gradients of the trainer's optimizer are checked at
    ``BACKWARD_COMPLETED``, before the step. Under AMP the gradient check is skipped: the loss is scaled, and
    ``GradScaler`` already skips the steps whose gradients overflow.

    Args:
        check_gradients: also check the gradients (one fused norm per step).
    """

    def __init__(self, check_gradients: bool = True) -> None:
        super().__init__()
        self.check_gradients = check_gradients
        self._term = ""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_losses)
        if self.check_gradients:
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_grads)

    @staticmethod
    def _where(engine: Engine) -> str:
        state = engine.state
        length = state.epoch_length
        in_epoch = (state.iteration - 1) % length + 1 if length else state.iteration
        return f"iteration {state.iteration} (epoch {state.epoch}, step {in_epoch} of {length})"

    def check_losses(self, engine: Engine) -> None:
        """Raise :class:`NonFiniteError` when a loss term of ``engine.state.output`` is NaN or infinite."""
        terms = loss_terms(engine.state.output)
        # the parts first: a NaN part makes the total NaN too, and the part is what the user needs to know
        for name in sorted(terms, key=lambda k: k == Keys.LOSS):
            if engine.should_terminate:  # another handler stopped the run: TerminateOnNan's flag would tell nothing
                non_finite = not _is_finite(terms[name])
            else:
                self._output_transform = lambda output, _name=name: loss_terms(output)[_name]
                self.logger.disabled = True  # the exception below says it, with the term's name
                try:
                    super().__call__(engine)
                finally:
                    self.logger.disabled = False
                non_finite = bool(engine.should_terminate)
            if non_finite:
                raise NonFiniteError(
                    f"non-finite loss at {self._where(engine)}: {name} = {_shown(terms[name])}. Training stopped before the "
                    "optimizer step: the weights and the checkpoints on disk are those of the last good step. "
                    "Resume with the same command (it restarts from the last resume checkpoint), e.g. with a lower "
                    "--learning_rate."
                )

    def check_grads(self, engine: Engine) -> None:
        """Raise :class:`NonFiniteError` when a gradient of the trainer's optimizer is NaN or infinite."""
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            return
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is None:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return
        names = {id(p): n for n, p in getattr(engine, "network", torch.nn.Module()).named_parameters()}
        bad = [
            names.get(id(p), f"group {i} parameter {j}")
            for i, g in enumerate(optimizer.param_groups)
            for j, p in enumerate(g["params"])
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        terms = ", ".join(f"{k} = {_shown(v)}" for k, v in loss_terms(engine.state.output).items())
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(
            f"non-finite gradient at {self._where(engine)} in {len(bad)} parameter(s): {shown} (loss terms: "
            f"{terms or 'none'}). Training stopped before the optimizer step: the weights and the checkpoints on disk "
            "are those of the last good step. Resume with the same command, e.g. with a lower --learning_rate."
        )


def non_finite_entries(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a (nested) checkpoint dict that hold a NaN or an infinity."""
    if isinstance(obj, torch.Tensor):
        return [] if _is_finite(obj) else [prefix or "<tensor>"]
    if isinstance(obj, Mapping):
        return [n for k, v in obj.items() for n in non_finite_entries(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in non_finite_entries(v, f"{prefix}.{i}" if prefix else str(i))]
    return []


def check_finite_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """Refuse to write ``obj`` to ``path`` when it holds a non-finite tensor, so the file there (the last good
    checkpoint, or ``model.pt``) is kept.

    Raises:
        NonFiniteError: naming the file and the first non-finite entries.
    """
    bad = non_finite_entries(obj)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        logging.getLogger(__name__).error(f"s4mi: not writing {path}: non-finite values in {shown}")
        raise NonFiniteError(
            f"not writing {path}: the state to save holds non-finite values ({shown}); the file already there is kept"
        )
