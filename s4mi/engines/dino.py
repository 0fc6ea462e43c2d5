"""DINO: self-distillation with no labels (Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021), the S4MI benchmark's self-supervised ViT pretraining."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from torch import nn

from s4mi.engines.base import SSLTrainer
from s4mi.keys import Keys

__all__ = ["DINOTrainer", "clip_gradients", "dino_param_groups"]


def dino_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """DINO's two parameter groups: weights with weight decay, biases and norm parameters (1-D) without.

    The second group is marked ``apply_weight_decay: False`` so that :class:`DINOTrainer`'s weight-decay schedule
    leaves it at 0.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "apply_weight_decay": False}]


def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm at most ``clip``, one parameter at a time (DINO's
    ``utils.clip_gradients``; ``torch.nn.utils.clip_grad_norm_`` clips the norm of all of them together)."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.detach().norm(2)
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))


class DINOTrainer(SSLTrainer):
    r"""DINO pretraining: a student and its EMA teacher on multi-crop views of unlabelled images.

    Per iteration (Caron et al. 2021, Algorithm 1 and the official recipe):

    1. the teacher (an :class:`s4mi.handlers.EMATeacher` of the student, no gradient) sees the ``G`` global crops,
       the student every crop (global then local), both through a
       :class:`s4mi.networks.dino.MultiCropWrapper` (backbone + :class:`~s4mi.networks.dino.DINOHead`);
    2. ``loss = loss_function(student_out, teacher_out, tau_t)`` (:class:`s4mi.losses.DINOLoss`: the teacher
       centred and sharpened by ``tau_t``, cross-entropy over all crop pairs but a crop with itself), then the
       centre update (all-reduced under DDP);
    3. backward; on each optimizer step the last layer's gradient is dropped during the first
       ``freeze_last_layer`` epochs and each parameter's gradient is clipped to ``clip_grad``
       (:func:`clip_gradients`); AMP on CUDA, accumulation: :class:`SSLTrainer`;
    4. the teacher is updated by its EMA handler with the momentum of its own schedule (cosine from 0.996 to 1).

    The schedules are ramps kept by name in ``engine.state`` (:meth:`SSLTrainer.schedule`): ``teacher_temp`` by
    epoch (warm-up 0.04 -> 0.07 over 30 epochs), ``lr`` and ``weight_decay`` by iteration (cosine; they are written
    into the optimizer's parameter groups before each step, the weight decay only into groups that do not say
    ``apply_weight_decay: False``, see :func:`dino_param_groups`). All are functions of the engine's counters, and
    the centre is a buffer of the loss, so a checkpoint of the trainer, networks, optimizer and loss resumes exactly.

    Args:
        device, max_epochs, train_data_loader, optimizer: as :class:`monai.engines.SupervisedTrainer`; the loader
            yields dictionaries with every key of ``global_keys`` and ``local_keys`` (``B C H W`` crops).
        network: the student (a ``MultiCropWrapper``: a list of crops in, a list of ``B K`` outputs out).
        loss_function: a :class:`s4mi.losses.DINOLoss` (its ``n_global_crops`` equal to ``len(global_keys)``).
        teachers: the teacher, one :class:`s4mi.handlers.EMATeacher` of ``network``.
        teacher_temp: :math:`\tau_t`, a constant or a ramp of the epoch.
        lr: the learning rate, a ramp of the iteration (None: the optimizer's own, or an LR scheduler's).
        weight_decay: a constant or a ramp of the iteration (None: the optimizer's own).
        freeze_last_layer: epochs during which the head's last layer does not learn (1).
        clip_grad: per-parameter gradient norm limit (3.0; 0 or None: no clipping).
        global_keys, local_keys: batch keys of the crops.
        kwargs: the rest of :class:`SSLTrainer`'s arguments.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[..., torch.Tensor],
        teachers: Any,
        teacher_temp: float | Callable[[int], float] = 0.04,
        lr: Callable[[int], float] | None = None,
        weight_decay: float | Callable[[int], float] | None = None,
        freeze_last_layer: int = 1,
        clip_grad: float | None = 3.0,
        global_keys: Sequence[str] = ("image_g0", "image_g1"),
        local_keys: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=teachers,
            **kwargs,
        )
        if len(self.teachers) != 1:
            raise ValueError(f"DINO needs exactly one teacher, got {len(self.teachers)}")
        self.global_keys, self.local_keys = list(global_keys), list(local_keys)
        if not self.global_keys:
            raise ValueError("DINO needs at least one global crop (global_keys)")
        n_global = getattr(loss_function, "n_global_crops", len(self.global_keys))
        if n_global != len(self.global_keys):
            raise ValueError(f"the loss expects {n_global} global crops, global_keys names {len(self.global_keys)}")
        self.freeze_last_layer = int(freeze_last_layer)
        self.clip_grad = float(clip_grad) if clip_grad else 0.0
        self.schedule("teacher_temp", teacher_temp, every="epoch")
        self._optimizer_schedules: list[str] = []
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if value is not None:
                self.schedule(name, value, every="iteration")
                self._optimizer_schedules.append(name)

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The crops on the device, global then local (a label key in the batch is refused)."""
        self.refuse_labels(batchdata, "pretraining")
        keys = [*self.global_keys, *self.local_keys]
        absent = [k for k in keys if k not in batchdata]
        if absent:
            raise KeyError(f"the pretraining batch lacks crop key(s) {absent} (has {sorted(batchdata)})")
        return {k: self.to_device(batchdata[k]) for k in keys}

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[self.global_keys[0]]}

    def _set_optimizer_values(self) -> None:
        for name in self._optimizer_schedules:
            value = self.scheduled(name)
            for group in self.optimizer.param_groups:
                if name == "weight_decay" and not group.get("apply_weight_decay", True):
                    continue
                group[name] = value

    def train_step(self, engine: DINOTrainer, batch: dict[str, torch.Tensor]) -> None:
        engine._set_optimizer_values()
        crops = [batch[k] for k in (*engine.global_keys, *engine.local_keys)]
        teacher_out = engine.teacher_forward(engine.teacher, crops[: len(engine.global_keys)])
        student_out = engine.network(crops)
        out = engine.state.output
        out.update({Keys.PRED: student_out[0], "teacher_out": teacher_out, "student_out": student_out})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        temp = engine.scheduled("teacher_temp")
        loss = engine.loss_function(student_out, teacher_out, temp)
        out.update(
            {Keys.LOSS: loss, "teacher_temp": temp, "teacher_entropy": engine._teacher_entropy(teacher_out, temp)}
        )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.loss_function.update_center(teacher_out)  # type: ignore[attr-defined]

    @torch.no_grad()
    def _teacher_entropy(self, teacher_out: Sequence[torch.Tensor], temp: float) -> float:
        """Mean entropy of the teacher's centred, sharpened targets: the collapse signal of DINO's section 5.3
        (``log K`` when the targets are uniform, 0 when one prototype takes every image)."""
        center = getattr(self.loss_function, "center", 0.0)
        t = torch.cat([x.detach().float() for x in teacher_out])
        p = torch.softmax((t - center) / temp, dim=-1)
        return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())

    def before_step(self, engine: DINOTrainer) -> None:
        network = engine.network
        if engine.clip_grad:
            clip_gradients(network, engine.clip_grad)
        if engine.state.epoch <= engine.freeze_last_layer:
            for name, p in network.named_parameters():
                if "last_layer" in name:
                    p.grad = None
