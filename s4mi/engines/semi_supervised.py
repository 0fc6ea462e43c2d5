"""The teacher-student training engine that every semi-supervised method in s4mi runs on."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Literal

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer

from s4mi.data.datalist import LABEL_KEYS

if TYPE_CHECKING:
    from ignite.engine import Engine

    from s4mi.handlers.teacher import EMATeacher

__all__ = ["Keys", "LabelLeakError", "SemiSupervisedTrainer"]


class Keys:
    """Names of the engine output (``engine.state.output``), the vocabulary of the semi-supervised literature.

    ``image``/``label``/``pred``/``loss`` are MONAI's own keys, so stock handlers (``from_engine(["loss"])``) work.
    """

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    LOSS = "loss"
    X_LB = "x_lb"
    Y_LB = "y_lb"
    X_ULB_W = "x_ulb_w"
    X_ULB_S = "x_ulb_s"
    LOGITS_LB = "logits_lb"
    LOGITS_ULB_S = "logits_ulb_s"
    LOGITS_ULB_T = "logits_ulb_t"
    PSEUDO_LABEL = "pseudo_label"
    ULB_INDEX = "ulb_index"
    MASK = "mask"
    LOSS_SUP = "loss_sup"
    LOSS_UNSUP = "loss_unsup"
    UNSUP_WEIGHT = "unsup_weight"


class LabelLeakError(KeyError):
    """An unlabelled batch carries a label key: the unlabelled branch must never see labels."""


class SemiSupervisedTrainer(SupervisedTrainer):
    """A MONAI trainer whose iteration takes a labelled and an unlabelled batch and keeps EMA teachers.

    The iteration (``_iteration``) is the only part of the MONAI/Ignite engine that is replaced, and it fires
    MONAI's ``IterationEvents`` in the usual order, so every MONAI and Ignite handler works unchanged:

    1. split ``{"labeled": ..., "unlabeled": ...}`` into x_lb, y_lb, x_ulb_w (weak view) and x_ulb_s (strong view),
       refusing an unlabelled batch that holds a label key;
    2. :meth:`train_step` (the method's maths) fills ``engine.state.output`` with logits and losses and fires
       ``FORWARD_COMPLETED`` and ``LOSS_COMPLETED``;
    3. backward (AMP grad scaling on CUDA; gradient accumulation over ``accumulation_steps``), ``BACKWARD_COMPLETED``,
       optimizer step, ``MODEL_COMPLETED``.

    Teachers (:class:`s4mi.handlers.EMATeacher`) are attached here rather than in ``train_handlers``, so they keep
    updating when MONAI Label replaces the handler list. The unlabelled-loss weight is ``engine.state.unsup_weight``:
    a constant, or a :class:`s4mi.handlers.ramps.Ramp` driven per iteration or epoch by Ignite's state scheduler.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: yields ``{"labeled": batch, "unlabeled": batch}``, e.g. :class:`s4mi.data.loaders.SemiSupervisedLoader`.
        network: the student.
        optimizer: optimizer of the student.
        loss_function: supervised loss on labelled data (``logits_lb``, ``y_lb``).
        teachers: EMA teachers by name, or a sequence of them (named by their own ``name``).
        unsup_weight: weight of the unlabelled loss, a float or a ramp of the step.
        unsup_weight_every: ``"iteration"`` or ``"epoch"``: what the ramp counts.
        image_key: image key in both batches (the weak view in the unlabelled one).
        label_key: label key of the labelled batch.
        strong_key: key of the strong view in the unlabelled batch.
        teacher_train_mode: run teachers in train mode (batch-norm statistics of the batch, dropout) as the
            original Mean Teacher code does; default eval mode.
        kwargs: the rest of :class:`monai.engines.SupervisedTrainer`'s arguments (``epoch_length``, ``inferer``,
            ``train_handlers``, ``amp``, ``accumulation_steps``, ``optim_set_to_none``, ...).
    """

    #: whether the unlabelled batch must hold a strong view (``strong_key``) besides the weak one
    needs_strong_view: bool = True

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        teachers: Mapping[str, EMATeacher] | Sequence[EMATeacher] | None = None,
        unsup_weight: float | Callable[[int], float] = 1.0,
        unsup_weight_every: Literal["iteration", "epoch"] = "iteration",
        image_key: str = "image",
        label_key: str = "label",
        strong_key: str = "image_s",
        teacher_train_mode: bool = False,
        inferer: Inferer | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decollate", False)  # labelled and unlabelled batch sizes differ
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            inferer=inferer,
            **kwargs,
        )
        if teachers is None:
            teachers = {}
        if not isinstance(teachers, Mapping):
            teachers = {t.name: t for t in teachers}
        self.teachers: dict[str, EMATeacher] = dict(teachers)
        for teacher in self.teachers.values():
            teacher.attach(self)
        self.image_key, self.label_key, self.strong_key = image_key, label_key, strong_key
        self.teacher_train_mode = teacher_train_mode
        self.unsup_weight_scheduler = None
        if callable(unsup_weight):
            from s4mi.handlers.ramps import attach_ramp

            self.unsup_weight_scheduler = attach_ramp(self, unsup_weight, Keys.UNSUP_WEIGHT, every=unsup_weight_every)
        else:
            setattr(self.state, Keys.UNSUP_WEIGHT, float(unsup_weight))

    @property
    def teacher(self) -> torch.nn.Module:
        """The first teacher's network (most methods have one)."""
        if not self.teachers:
            raise AttributeError("this trainer has no teacher")
        return next(iter(self.teachers.values())).ema_model

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{"labeled", "unlabeled"}`` -> x_lb, y_lb, x_ulb_w, x_ulb_s on the device.

        Raises:
            KeyError: a stream or key is missing.
            LabelLeakError: the unlabelled batch holds a label key.
        """
        missing = [k for k in ("labeled", "unlabeled") if k not in batchdata]
        if missing:
            raise KeyError(f"{type(self).__name__} needs batches of {{'labeled', 'unlabeled'}}, missing {missing}")
        lb, ulb = batchdata["labeled"], batchdata["unlabeled"]
        leaked = [k for k in (*LABEL_KEYS, self.label_key) if k in ulb]
        if leaked:
            raise LabelLeakError(
                f"the unlabelled batch holds label key(s) {sorted(set(leaked))}: unlabelled items must carry images "
                "only (check the 'unlabeled' section of the datalist and the unlabelled dataset's transforms)"
            )
        ulb_keys = (self.image_key, self.strong_key) if self.needs_strong_view else (self.image_key,)
        for name, part, keys in (
            ("labeled", lb, (self.image_key, self.label_key)),
            ("unlabeled", ulb, ulb_keys),
        ):
            absent = [k for k in keys if k not in part]
            if absent:
                raise KeyError(f"the {name} batch lacks key(s) {absent} (has {sorted(part)})")
        dev, nb = self.state.device, self.non_blocking
        out = {
            Keys.X_LB: lb[self.image_key].to(dev, non_blocking=nb),
            Keys.Y_LB: lb[self.label_key].to(dev, non_blocking=nb),
            Keys.X_ULB_W: ulb[self.image_key].to(dev, non_blocking=nb),
        }
        # a method that does not need two views (one augmented view for teacher and student) may omit the strong one
        out[Keys.X_ULB_S] = (
            ulb[self.strong_key].to(dev, non_blocking=nb) if self.strong_key in ulb else out[Keys.X_ULB_W]
        )
        # one look at the first batch of a run is enough to catch a pipeline that never augments the strong view
        if self.needs_strong_view and self.state.iteration <= 1 and torch.equal(out[Keys.X_ULB_W], out[Keys.X_ULB_S]):
            warnings.warn(
                "the weak and strong unlabelled views are identical in this batch: check that the strong view is "
                "augmented (a consistency loss between two identical inputs is about zero)",
                stacklevel=2,
            )
        return out

    def student_forward(
        self, x_lb: torch.Tensor, x_ulb: torch.Tensor, joint: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student logits of the labelled and unlabelled images: one forward over both when ``joint`` and their
        shapes match (batch norm then sees them together, as in the reference implementations), else two."""
        if joint and x_lb.shape[1:] == x_ulb.shape[1:]:
            logits = self.inferer(torch.cat([x_lb, x_ulb]), self.network)
            return logits[: x_lb.shape[0]], logits[x_lb.shape[0] :]
        return self.inferer(x_lb, self.network), self.inferer(x_ulb, self.network)

    def set_losses(self, loss_sup: torch.Tensor, loss_unsup: torch.Tensor) -> None:
        """Put ``loss = loss_sup + w * loss_unsup`` (``w``: the current unlabelled weight) and its parts in the
        output, then fire ``LOSS_COMPLETED``."""
        weight = float(getattr(self.state, Keys.UNSUP_WEIGHT))
        self.state.output.update(
            {
                Keys.LOSS_SUP: loss_sup,
                Keys.LOSS_UNSUP: loss_unsup,
                Keys.UNSUP_WEIGHT: weight,
                Keys.LOSS: loss_sup + weight * loss_unsup,
            }
        )
        self.fire_event(IterationEvents.LOSS_COMPLETED)

    def teacher_forward(self, teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits, without gradients, in eval mode unless ``teacher_train_mode``."""
        teacher.train(self.teacher_train_mode)
        with torch.no_grad():
            return self.inferer(x, teacher)

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The iteration's output before :meth:`train_step` adds to it: MONAI's ``image`` and ``label`` keys."""
        return {Keys.IMAGE: batch[Keys.X_LB], Keys.LABEL: batch[Keys.Y_LB]}

    def train_step(self, engine: SemiSupervisedTrainer, batch: dict[str, torch.Tensor]) -> None:
        """The method's maths: fill ``engine.state.output`` (``loss`` included), fire FORWARD/LOSS_COMPLETED."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step")

    def _accumulation(self, engine: Engine) -> tuple[bool, bool]:
        acc = self.accumulation_steps
        if acc == 1:
            return True, True
        epoch_length = engine.state.epoch_length
        local_iter = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        last = epoch_length is not None and (local_iter + 1) == epoch_length
        return local_iter % acc == 0, (local_iter + 1) % acc == 0 or last

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.split_batch(batchdata)
        engine.state.output = engine.initial_output(batch)
        should_zero_grad, should_step = engine._accumulation(engine)
        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        scaler = engine.scaler if engine.amp else None
        context = torch.autocast("cuda", **engine.amp_kwargs) if scaler is not None else nullcontext()
        with context:
            engine.train_step(engine, batch)
        loss = engine.state.output[Keys.LOSS]
        if engine.accumulation_steps > 1:
            loss = loss / engine.accumulation_steps
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step:
            if scaler is not None:
                scaler.step(engine.optimizer)
                scaler.update()
            else:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
