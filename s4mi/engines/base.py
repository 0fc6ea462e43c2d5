"""The base of every s4mi trainer: a MONAI trainer whose iteration is a method's step, with helper networks beside it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Literal

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.inferers import Inferer

from s4mi.keys import LABEL_KEYS, Keys

if TYPE_CHECKING:
    from ignite.engine import Engine

    from s4mi.handlers.ramps import RampScheduler
    from s4mi.handlers.teacher import EMATeacher

__all__ = ["FullySupervisedTrainer", "LabelLeakError", "SSLTrainer", "untrained_parameters"]


class LabelLeakError(KeyError):
    """A batch the method must learn from without labels carries a label key."""


def untrained_parameters(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of ``module``'s trainable parameters that no parameter group of ``optimizer`` holds: a network that a
    method trains beside the main one (CASS's second network, SRCL's projection head) must be in the optimizer."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [name for name, p in module.named_parameters() if p.requires_grad and id(p) not in held]


class SSLTrainer(SupervisedTrainer):
    """Self- and semi-supervised trainer: a :class:`monai.engines.SupervisedTrainer` whose iteration runs a method's
    :meth:`train_step`, with helper networks (EMA teachers, key encoders) kept beside the trained network and the
    method's weights (an unlabelled-loss weight, JCL's lambda, ...) scheduled by name in ``engine.state``.

    Every method's trainer derives from it: teacher-student methods (:class:`SemiSupervisedTrainer`: a labelled and
    an unlabelled stream), self-supervised ones (:class:`s4mi.engines.MoCoTrainer`: one unlabelled stream, no label)
    and two-network methods (two students that teach each other: ``network`` is a ``torch.nn.ModuleDict`` of both
    and ``optimizer`` holds a parameter group per student). A subclass writes :meth:`split_batch` (the batch to
    tensors on the device) and :meth:`train_step` (the maths: fill ``engine.state.output``, ``loss`` included, and
    fire ``FORWARD_COMPLETED`` and ``LOSS_COMPLETED``); this class does the rest, firing MONAI's
    ``IterationEvents`` in MONAI's order, so every MONAI and Ignite handler works unchanged.

    What comes from :class:`~monai.engines.SupervisedTrainer` and works through this class:

    - ``prepare_batch``: MONAI's default reads s4mi's ``image_key``/``label_key``; a custom one (e.g.
      :class:`monai.engines.PrepareBatchDefault`) is called on each stream (:meth:`prepare_stream`);
    - ``to_kwargs`` (e.g. ``{"memory_format": torch.channels_last}``) and ``non_blocking`` on every tensor moved;
    - ``compile``/``compile_kwargs``: the trained network is compiled by MONAI; MetaTensors become plain tensors
      before they reach it (MONAI's workaround for pytorch/pytorch#117026);
    - ``amp``/``amp_kwargs`` (``{"dtype": torch.bfloat16}`` or ``float16``): autocast on the device's type, the CPU
      included (MONAI's trainers autocast ``"cuda"`` only), with a gradient scaler on CUDA in float16;
    - ``accumulation_steps``, ``optim_set_to_none``: the same schedule as MONAI's
      ``SupervisedTrainer._iteration`` (zero the gradients on the first step of each accumulation window, step on
      its last or on the last iteration of the epoch, loss divided by the window). MONAI 1.6 keeps that code inside
      its ``_iteration``, which computes one ``inferer(inputs, network)`` and one ``loss_function(pred, target)``
      and so cannot run a method's step; :meth:`_iteration` here is that code around :meth:`train_step`, and
      ``tests/engines/test_base.py`` checks it gives MONAI's weights step for step.

    Teachers (:class:`s4mi.handlers.EMATeacher`) are attached here rather than in ``train_handlers``, so they keep
    updating when MONAI Label replaces the handler list.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as :class:`monai.engines.SupervisedTrainer`.
        loss_function: the method's loss (its meaning is the subclass's).
        teachers: EMA teachers (helper networks updated from the trained one) by name, or a sequence of them (named
            by their own ``name``).
        teacher_train_mode: run teachers in train mode (batch statistics of the batch, dropout) in
            :meth:`teacher_forward`; default eval mode.
        inferer: how a network is run on a batch (default :class:`monai.inferers.SimpleInferer`).
        kwargs: the rest of :class:`monai.engines.SupervisedTrainer`'s arguments (``epoch_length``,
            ``train_handlers``, ``amp``, ``accumulation_steps``, ``prepare_batch``, ``to_kwargs``, ``compile``, ...);
            ``decollate`` defaults to False (the streams' batch sizes differ).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable | None = None,
        teachers: Mapping[str, EMATeacher] | Sequence[EMATeacher] | None = None,
        teacher_train_mode: bool = False,
        inferer: Inferer | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,  # type: ignore[arg-type]  # a method may make its losses itself
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
        self.teacher_train_mode = teacher_train_mode
        self.schedulers: dict[str, RampScheduler] = {}
        # autocast on the training device's type: MONAI's trainers autocast "cuda" only, so ``amp`` on a CPU did
        # nothing; here bfloat16 (or float16) autocast runs on the CPU too. The gradient scaler (MONAI makes a CUDA
        # one whenever ``amp``) is kept for CUDA only: a CPU run has no float16 gradients to rescue.
        self.autocast_device = torch.device(device).type

    def run(self) -> None:  # type: ignore[override]
        """Train (continuing from the current state when called again): MONAI's ``Trainer.run``, with its CUDA
        gradient scaler made only when training on CUDA with ``amp`` in float16 (bfloat16 has float32's range and
        needs no scaling; MONAI makes the scaler for any ``amp``, and it synchronises the GPU at every step)."""
        from monai.engines.workflow import Workflow

        fp16 = self.amp_kwargs.get("dtype", torch.float16) == torch.float16  # autocast's CUDA default
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.autocast_device == "cuda" and fp16 else None
        Workflow.run(self)

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def teacher(self) -> torch.nn.Module:
        """The first teacher's network (most methods have one)."""
        if not self.teachers:
            raise AttributeError("this trainer has no teacher")
        return next(iter(self.teachers.values())).ema_model

    def teacher_forward(self, teacher: torch.nn.Module, x: Any) -> Any:
        """A helper network's output, without gradients, in eval mode unless ``teacher_train_mode``."""
        teacher.train(self.teacher_train_mode)
        with torch.no_grad():
            return self.inferer(x, teacher)

    def schedule(
        self, name: str, value: float | Callable[[int], float], every: Literal["iteration", "epoch"] = "iteration"
    ) -> None:
        """Keep ``engine.state.<name>`` at ``value``: a constant, or a ramp of the 0-based iteration or epoch
        (:class:`s4mi.handlers.ramps.Ramp`, set by Ignite's state scheduler before each step and kept in
        :attr:`schedulers`). A resumed run reads the right value from the engine's counters alone."""
        if callable(value):
            from s4mi.handlers.ramps import attach_ramp

            self.schedulers[name] = attach_ramp(self, value, name, every=every)
        else:
            setattr(self.state, name, float(value))

    def scheduled(self, name: str) -> float:
        """The current value of a weight set up by :meth:`schedule`."""
        return float(getattr(self.state, name))

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the training device with ``non_blocking`` and ``to_kwargs``; a plain tensor under ``compile``. A
        ``memory_format`` applies to the tensors of its rank only (images, masks), not to class vectors."""
        if self.compile and isinstance(x, MetaTensor):
            x = x.as_tensor()
        kwargs = self.to_kwargs
        fmt = kwargs.get("memory_format")
        if fmt is not None and x.ndim != {torch.channels_last: 4, torch.channels_last_3d: 5}.get(fmt, x.ndim):
            kwargs = {k: v for k, v in kwargs.items() if k != "memory_format"}  # a class vector stays as it is
        return x.to(self.state.device, non_blocking=self.non_blocking, **kwargs)

    def prepare_stream(
        self, data: Mapping[str, Any], image_key: str, label_key: str | None, stream: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One stream's image and label (``None`` for an unlabelled stream) on the device, by ``prepare_batch``.

        With MONAI's ``default_prepare_batch`` the keys are s4mi's (``image_key``, ``label_key``); a custom
        ``prepare_batch`` is called as MONAI calls it and must return ``(image, label)``.

        Raises:
            KeyError: a key is missing (the message names the stream and the keys it has).
            ValueError: a custom ``prepare_batch`` returns extra network inputs, which a method's step has no place
                for.
        """
        keys = (image_key,) if label_key is None else (image_key, label_key)
        absent = [k for k in keys if k not in data]
        if absent:
            raise KeyError(f"the {stream} batch lacks key(s) {absent} (has {sorted(data)})")
        if self.prepare_batch is default_prepare_batch:
            image = self.to_device(data[image_key])
            return image, None if label_key is None else self.to_device(data[label_key])
        out = self.prepare_batch(data, self.state.device, self.non_blocking, **self.to_kwargs)
        if len(out) != 2:
            raise ValueError(
                f"prepare_batch returned {len(out)} items for the {stream} batch; {type(self).__name__} takes "
                "(image, label): extra network inputs are not passed to a method's networks"
            )
        image, label = out
        if self.compile and isinstance(image, MetaTensor):
            image = image.as_tensor()
        if self.compile and isinstance(label, MetaTensor):
            label = label.as_tensor()
        return image, None if label_key is None else label

    @staticmethod
    def refuse_labels(data: Mapping[str, Any], stream: str, extra: Sequence[str] = ()) -> None:
        """Raise :class:`LabelLeakError` when a batch that must be label-free holds a label key."""
        leaked = sorted({k for k in (*LABEL_KEYS, *extra) if k in data})
        if leaked:
            raise LabelLeakError(
                f"the {stream} batch holds label key(s) {leaked}: it must carry images only (check the datalist "
                "section it is read from and its transforms)"
            )

    # ----------------------------------------------------------------------------------------- the method
    def split_batch(self, batchdata: Any) -> dict[str, torch.Tensor]:
        """The loader's batch -> the tensors :meth:`train_step` reads, on the device."""
        raise NotImplementedError(f"{type(self).__name__} must implement split_batch")

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The iteration's output before :meth:`train_step` adds to it (MONAI's ``image``/``label`` keys)."""
        return {}

    def before_step(self, engine: Any) -> None:
        """Between backward and the optimizer step, on steps that step (gradients unscaled under AMP): a method's
        gradient surgery (clipping, freezing a layer). Nothing by default."""

    def train_step(self, engine: Any, batch: dict[str, torch.Tensor]) -> None:
        """The method's maths: fill ``engine.state.output`` (``loss`` included), fire FORWARD/LOSS_COMPLETED."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step")

    # ------------------------------------------------------------------------------------------ iteration
    def _accumulation(self, engine: Engine) -> tuple[bool, bool]:
        """``(zero the gradients now, step the optimizer now)``: MONAI 1.6's accumulation schedule."""
        acc = self.accumulation_steps
        if acc == 1:
            return True, True
        epoch_length = engine.state.epoch_length
        local_iter = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        last = epoch_length is not None and (local_iter + 1) == epoch_length
        return local_iter % acc == 0, (local_iter + 1) % acc == 0 or last

    def _iteration(self, engine: SSLTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.split_batch(batchdata)
        engine.state.output = engine.initial_output(batch)
        should_zero_grad, should_step = engine._accumulation(engine)
        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        scaler = engine.scaler if engine.amp else None
        context = torch.autocast(engine.autocast_device, **engine.amp_kwargs) if engine.amp else nullcontext()
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
            if type(engine).before_step is not SSLTrainer.before_step:
                if scaler is not None:
                    scaler.unscale_(engine.optimizer)
                engine.before_step(engine)
            if scaler is not None:
                scaler.step(engine.optimizer)
                scaler.update()
            else:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class FullySupervisedTrainer(SSLTrainer):
    """MONAI's supervised step (``pred = inferer(image)``, ``loss = loss_function(pred, label)``) as an s4mi trainer.

    The step and its schedule give :class:`monai.engines.SupervisedTrainer`'s weights exactly
    (``tests/engines/test_base.py``); the supervised baselines use this class so that what :class:`SSLTrainer`
    adds holds for them too: ``amp`` on the CPU (bfloat16 autocast), the compile and ``to_kwargs`` handling of every
    s4mi method, and MONAI Label's handler swap leaving the step alone.

    Args:
        image_key, label_key: batch keys.
        args, kwargs: :class:`SSLTrainer`'s.
    """

    def __init__(self, *args: Any, image_key: str = "image", label_key: str = "label", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image_key, self.label_key = image_key, label_key

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        x, y = self.prepare_stream(batchdata, self.image_key, self.label_key, "training")
        return {Keys.X_LB: x, Keys.Y_LB: y}  # type: ignore[dict-item]

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[Keys.X_LB], Keys.LABEL: batch[Keys.Y_LB]}

    def train_step(self, engine: Any, batch: dict[str, torch.Tensor]) -> None:
        out = engine.state.output
        out[Keys.PRED] = engine.inferer(batch[Keys.X_LB], engine.network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out[Keys.LOSS] = engine.loss_function(out[Keys.PRED], batch[Keys.Y_LB]).mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
