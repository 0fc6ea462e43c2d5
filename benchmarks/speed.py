"""Throughput of every s4mi engine against a plain PyTorch loop doing the same maths (issue 25, "Throughput").

For each engine a step through s4mi's trainer (Ignite engine, MONAI events, the handlers the engine attaches itself:
EMA teachers, ramp schedulers, DINO's schedules and centre, MoCo's queue) is timed against a hand-written PyTorch
loop doing the same maths on the same network and the same in-memory batches (data loading is not measured). The
networks are the bundles' (``network`` of ``bundles/<bundle>/configs/train.json`` or ``pretrain.json``, built with
MONAI's ``ConfigParser``) at the bundles' image and batch sizes; ``--small`` shrinks images, batches, ViT/Swin depth
and widths (DenseNet-121 and the UNets keep their architecture) so the whole table runs in a few minutes on a CPU.

The plain loops call the same networks and the same loss functions (the engine is what is measured, not the loss);
everything else is written out: the joint student forward, the teacher forward under ``no_grad``, the loss sum,
``backward``, gradient surgery (DINO: per-parameter clipping, the frozen last layer), the optimizer step, the EMA
updates with ``torch._foreach`` ops (cached tensor lists), the DINO centre, MoCo's shuffle-BN and queue ring buffer,
DINO's learning-rate and weight-decay schedules. ``tests/benchmark/test_speed.py`` checks, per engine, that the plain
loop and the trainer give the same weights (student, teachers, queue, centre) from the same seed.

Each round times ``--steps`` whole steps of each side back to back (``Cycle`` of the batches; everything the engine
does between steps, its ``STARTED``/``EPOCH_*`` events included, is inside the timed span; building the trainer or the
plain loop's optimizer and teacher copies is not), after one untimed warm-up round; the order alternates from round
to round (:func:`_timing.side_by_side`). The table gives the median seconds per step of each side, the median of
the per-round ratios s4mi / plain with their range, images per second through s4mi (labelled + unlabelled images,
or the images whose views a pretraining step reads) and, on CUDA only, the peak memory of each side
(``torch.cuda.max_memory_allocated``, reset before each side, the largest over the rounds); on a CPU that column is
``-`` (PyTorch keeps no peak of CPU allocations). On CUDA the clock is read after ``torch.cuda.synchronize()``.

What the s4mi side does beyond the plain loop, by design (so part of what the ratio measures): MONAI's per-iteration
events and output dictionary, the label guard and key checks of each batch, the weak/strong identity check on the
first batch, DINO's teacher-entropy output, cross teaching's pseudo-label outputs, and, with ``--amp`` on CUDA,
MONAI's gradient scaler (made for any AMP dtype; the plain loop has none, bfloat16 needs none).

    .venv/bin/python benchmarks/speed.py --threads 1 --steps 4 --rounds 5
    .venv/bin/python benchmarks/speed.py --small --engines mean_teacher dino --steps 2 --rounds 1
    python benchmarks/speed.py --device cuda --amp          # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _timing import Cycle, side_by_side
from monai.bundle import ConfigParser
from monai.losses import ContrastiveLoss
from torch import nn

from s4mi.engines import (
    CASSTrainer,
    CrossTeachingTrainer,
    CurriculumTrainer,
    DINOTrainer,
    FullySupervisedTrainer,
    MeanTeacherTrainer,
    MoCoTrainer,
    OnlinePseudoLabelTrainer,
    SimCLRTrainer,
    SRCLTrainer,
    SRCMTTrainer,
    SSLTrainer,
)
from s4mi.engines.dino import clip_gradients, dino_param_groups
from s4mi.handlers import EMATeacher
from s4mi.handlers.ramps import LinearRamp, SigmoidRamp, WarmupCosine
from s4mi.losses import CASSLoss, CrossTeachingLoss, DINOLoss, JCLLoss, softmax_mse_loss
from s4mi.losses.consistency import RelationConsistencyLoss, SoftDiceConsistencyLoss
from s4mi.losses.contrastive import jcl_enqueue_keys
from s4mi.losses.targets import probabilities

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

#: engine (command-line name) -> trainer class; the curriculum runs one row per pretext task
ENGINES: dict[str, type[SSLTrainer]] = {
    "supervised": FullySupervisedTrainer,
    "mean_teacher": MeanTeacherTrainer,
    "online_pseudo_label": OnlinePseudoLabelTrainer,
    "moco": MoCoTrainer,
    "simclr": SimCLRTrainer,
    "dino": DINOTrainer,
    "cass": CASSTrainer,
    "cross_teaching": CrossTeachingTrainer,
    "src_mt": SRCMTTrainer,
    "srcl": SRCLTrainer,
    "curriculum": CurriculumTrainer,
}

#: config values that ``--small`` replaces (where a bundle's config has the key)
SMALL: dict[str, Any] = {
    "spatial_size": [32, 32],
    "batch_size": 4,
    "unlabeled_batch_size": 4,
    "pretrain_batch_size": 4,
    "vit_layers": 1,
    "vit_hidden_size": 48,
    "vit_mlp_dim": 96,
    "dino_out_dim": 256,
    "dino_hidden_dim": 128,
    "dino_bottleneck_dim": 64,
    "n_local_crops": 2,
    "cass_dim": 64,
    "swin_depths": [1, 1, 1, 1],
    "queue_size": 64,
}

#: DINO's schedules here have no warm-up (a warm-up learning rate of 0 would make the first steps move nothing)
SCHEDULE_LENGTH = 1000


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return None


# ------------------------------------------------------------------------------------------------ plain PyTorch
@torch.no_grad()
def ema_lists(teacher: nn.Module, student: nn.Module, buffers: str) -> tuple[list, list, list, list]:
    """The (teacher, student) tensors an EMA averages and those it copies, listed once: ``buffers`` is ``"copy"``
    (running statistics copied), ``"update"`` (floating buffers averaged, integer ones copied) or ``"ema_train"``
    (the teacher's own forwards keep its buffers)."""
    avg_t, avg_s = list(teacher.parameters()), [p.detach() for p in student.parameters()]
    copy_t: list[torch.Tensor] = []
    copy_s: list[torch.Tensor] = []
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        if buffers == "update" and tb.is_floating_point():
            avg_t.append(tb)
            avg_s.append(sb)
        elif buffers in ("update", "copy"):
            copy_t.append(tb)
            copy_s.append(sb)
    return avg_t, avg_s, copy_t, copy_s


@torch.no_grad()
def ema_(lists: tuple[list, list, list, list], m: float) -> None:
    """``teacher <- m teacher + (1 - m) student`` with two ``torch._foreach`` calls; ``m = 1`` moves nothing."""
    if m == 1.0:
        return
    avg_t, avg_s, copy_t, copy_s = lists
    torch._foreach_mul_(avg_t, m)
    torch._foreach_add_(avg_t, avg_s, alpha=1.0 - m)
    if copy_t:
        torch._foreach_copy_(copy_t, copy_s)


def srcmt_momentum(m: float, t: int) -> float:
    """Mean Teacher's warm-up of the teacher weight, ``min(1 - 1 / (t + 1), m)`` at 0-based update ``t``."""
    return min(1.0 - 1.0 / (t + 1), m)


class PlainLoop:
    """A plain PyTorch training loop: zero the gradients, forward and loss (under bfloat16 autocast with ``amp``),
    backward, gradient surgery, optimizer step, then the helper-network updates. A subclass writes :meth:`loss`
    (and :meth:`before_step`, :meth:`after_step`); ``it`` is the 1-based step, as Ignite counts."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer, device: str, amp: bool) -> None:
        self.net, self.opt, self.device, self.amp = net, optimizer, device, amp
        self.device_type = torch.device(device).type

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def loss(self, b: dict, it: int) -> torch.Tensor:
        raise NotImplementedError

    def before_step(self, it: int) -> None:
        """Between backward and the optimizer step."""

    def after_step(self, it: int) -> None:
        """After the optimizer step (EMA updates)."""

    def step(self, b: dict, it: int) -> None:
        self.net.train()
        self.opt.zero_grad(set_to_none=False)
        with self.autocast():
            loss = self.loss(b, it)
        loss.backward()
        self.before_step(it)
        self.opt.step()
        self.after_step(it)

    def run(self, batches: Sequence[dict], n: int) -> float:
        """Seconds per step over ``n`` steps (the whole span)."""
        _sync(self.device)
        t0 = time.perf_counter()
        for i in range(n):
            self.step(batches[i % len(batches)], i + 1)
        _sync(self.device)
        return (time.perf_counter() - t0) / n

    def state(self) -> dict[str, nn.Module | torch.Tensor]:
        """What training changes, by the names :meth:`Case.trainer_state` gives the s4mi side's."""
        return {"student": self.net}


class PlainSupervised(PlainLoop):
    def __init__(self, *args: Any, loss_fn: Callable) -> None:
        super().__init__(*args)
        self.loss_fn = loss_fn

    def loss(self, b: dict, it: int) -> torch.Tensor:
        return self.loss_fn(self.net(b["image"]), b["label"]).mean()


def densenet_logits_and_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A MONAI DenseNet's logits and pooled features ``B D`` from one forward, its submodules run by hand."""
    layers = net.class_layers
    feats = layers.flatten(layers.pool(layers.relu(net.features(x))))
    return layers.out(feats), feats


class PlainMeanTeacher(PlainLoop):
    """Mean Teacher; ``relation`` adds SRC-MT's relation term, ``head`` SRCL's contrastive term."""

    def __init__(
        self,
        *args: Any,
        loss_fn: Callable,
        unsup_weight: Callable[[int], float],
        momentum: float,
        unsup_every: str = "epoch",
        activation: str = "softmax",
        warmup: bool = True,
        teacher_train_mode: bool = False,
        relation: Callable | None = None,
        relation_weight: Callable[[int], float] | None = None,
        head: nn.Module | None = None,
        contrastive: Callable | None = None,
        contrastive_weight: Callable[[int], float] | None = None,
    ) -> None:
        super().__init__(*args)
        self.loss_fn, self.unsup_weight, self.momentum = loss_fn, unsup_weight, momentum
        self.unsup_every, self.activation, self.warmup = unsup_every, activation, warmup
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        self.teacher_train_mode = teacher_train_mode
        self.relation, self.relation_weight = relation, relation_weight
        self.head, self.contrastive, self.contrastive_weight = head, contrastive, contrastive_weight
        self.ema = ema_lists(self.teacher, self.net, "copy")

    def loss(self, b: dict, it: int) -> torch.Tensor:
        x_lb, y_lb = b["labeled"]["image"], b["labeled"]["label"]
        x_ulb_w, x_ulb_s = b["unlabeled"]["image"], b["unlabeled"]["image_s"]
        xs = [x_lb, x_ulb_s] + ([x_ulb_w, b["labeled"]["image_s"]] if self.head is not None else [])
        sizes = [len(x) for x in xs]
        if self.relation is None:
            logits_lb, logits_ulb_s, *_ = self.net(torch.cat(xs)).split(sizes)
        else:
            logits, feats = densenet_logits_and_features(self.net, torch.cat(xs))
            logits_lb, logits_ulb_s, *_ = logits.split(sizes)
            a_lb, a_ulb_s, *rest = feats.split(sizes)
        self.teacher.train(self.teacher_train_mode)
        with torch.no_grad():
            if self.relation is None:
                logits_ulb_t = self.teacher(x_ulb_w)
            else:
                logits_ulb_t, a_ulb_t = densenet_logits_and_features(self.teacher, x_ulb_w)
        if self.head is not None:
            a_ulb_w, a_lb_s = rest
            z_1, z_2 = self.head(torch.cat([a_lb, a_ulb_w, a_lb_s, a_ulb_s])).chunk(2)
        epoch = 0
        w = self.unsup_weight(it - 1 if self.unsup_every == "iteration" else epoch)
        terms = [(w, softmax_mse_loss(logits_ulb_s.float(), logits_ulb_t.float(), self.activation))]
        if self.relation is not None:
            terms.append((self.relation_weight(epoch), self.relation(a_ulb_s, a_ulb_t)))
        if self.head is not None:
            terms.append((self.contrastive_weight(epoch), self.contrastive(z_1.float(), z_2.float())))
        # the supervised loss after the unlabelled terms, as the trainer builds them: autograd then sums the
        # gradients of the shared features in the same order, to the last bit
        loss = self.loss_fn(logits_lb, y_lb).mean()
        for weight, term in terms:
            loss = loss + weight * term
        return loss

    def after_step(self, it: int) -> None:
        ema_(self.ema, srcmt_momentum(self.momentum, it - 1) if self.warmup else self.momentum)

    def state(self) -> dict[str, nn.Module | torch.Tensor]:
        return {"student": self.net, "teacher": self.teacher, **({"head": self.head} if self.head else {})}


class PlainOnlinePseudoLabel(PlainLoop):
    """Online pseudo-labelling: the pseudo-label teacher labels the student's (strong) input, soft-Dice consistency;
    the teacher (buffers averaged) and the student's momentum copy (buffers copied) follow the student."""

    def __init__(self, *args: Any, loss_fn: Callable, beta: float, momentum: float, student_momentum: float) -> None:
        super().__init__(*args)
        self.loss_fn, self.beta = loss_fn, beta
        self.consistency = SoftDiceConsistencyLoss("sigmoid")
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        self.student_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.momentum, self.student_momentum = momentum, student_momentum
        self.ema_teacher = ema_lists(self.teacher, self.net, "update")
        self.ema_student = ema_lists(self.student_ema, self.net, "copy")

    def loss(self, b: dict, it: int) -> torch.Tensor:
        x_lb, y_lb, x_u = b["labeled"]["image"], b["labeled"]["label"], b["unlabeled"]["image_s"]
        self.teacher.eval()
        with torch.no_grad():
            q = probabilities(self.teacher(x_u).float(), "sigmoid")
        logits_lb, logits_u = self.net(torch.cat([x_lb, x_u])).split([len(x_lb), len(x_u)])
        return self.loss_fn(logits_lb, y_lb).mean() + self.beta * self.consistency(logits_u.float(), q)

    def after_step(self, it: int) -> None:
        ema_(self.ema_student, self.student_momentum)
        ema_(self.ema_teacher, self.momentum)

    def state(self) -> dict[str, nn.Module | torch.Tensor]:
        return {"student": self.net, "teacher": self.teacher, "student_ema": self.student_ema}


class PlainMoCo(PlainLoop):
    """MoCo v2 / JCL as MoCo's reference code: query forward; per key view a shuffled, chunked (shuffle-BN) key
    forward under ``no_grad`` and unshuffle; JCL loss; enqueue the key mean; EMA of the key encoder (its buffers its
    own). The shuffle permutations come from generators seeded as the trainer seeds them (``shuffle_seed``, step,
    view)."""

    def __init__(
        self, *args: Any, views: int, queue_size: int, dim: int, tau: float, momentum: float, lam: Callable, splits: int
    ) -> None:
        super().__init__(*args)
        self.key = copy.deepcopy(self.net).requires_grad_(False)
        self.queue = nn.functional.normalize(torch.randn(queue_size, dim), dim=1).to(self.device)
        self.ptr = 0
        self.views, self.momentum, self.lam, self.splits = views, momentum, lam, splits
        self.loss_fn = JCLLoss(tau)
        self.ema = ema_lists(self.key, self.net, "ema_train")

    def loss(self, b: dict, it: int) -> torch.Tensor:
        q = self.net(b["image_q"])
        self.key.train()
        with torch.no_grad():
            keys = []
            for m in range(self.views):
                x = b[f"image_k{m}"]
                g = torch.Generator().manual_seed(it * 64 + m)  # the trainer's seed for shuffle_seed 0
                perm = torch.randperm(x.shape[0], generator=g).to(x.device)
                out = torch.cat([self.key(c) for c in torch.tensor_split(x[perm], self.splits)])
                keys.append(out[torch.argsort(perm)])
            k = torch.stack(keys, dim=1)
        loss = self.loss_fn(q.float(), k.float(), self.queue.clone(), self.lam(0))
        mu = jcl_enqueue_keys(k.float())
        idx = (self.ptr + torch.arange(len(mu), device=mu.device)) % len(self.queue)
        self.queue.index_copy_(0, idx, mu)
        self.ptr = (self.ptr + len(mu)) % len(self.queue)
        return loss

    def after_step(self, it: int) -> None:
        ema_(self.ema, self.momentum)

    def state(self) -> dict[str, nn.Module | torch.Tensor]:
        return {"student": self.net, "key_encoder": self.key, "queue": self.queue}


class PlainSimCLR(PlainLoop):
    def __init__(self, *args: Any, loss_fn: Callable) -> None:
        super().__init__(*args)
        self.loss_fn = loss_fn

    def loss(self, b: dict, it: int) -> torch.Tensor:
        z_1, z_2 = self.net(torch.cat([b["image_v0"], b["image_v1"]])).chunk(2)
        return self.loss_fn(z_1.float(), z_2.float())


class PlainDINO(PlainLoop):
    """DINO as its official loop: learning rate and weight decay written into the groups, teacher on the global
    crops, student on all, loss and centre update, clipping and the frozen last layer, EMA with its schedule."""

    def __init__(
        self,
        *args: Any,
        loss_fn: DINOLoss,
        n_global: int,
        crops: Sequence[str],
        temp: Callable,
        lr: Callable,
        wd: Callable,
        momentum: Callable,
        clip: float,
    ) -> None:
        super().__init__(*args)
        self.loss_fn, self.n_global, self.crops = loss_fn, n_global, list(crops)
        self.temp, self.lr, self.wd, self.momentum, self.clip = temp, lr, wd, momentum, clip
        self.teacher = copy.deepcopy(self.net).requires_grad_(False)
        self.ema = ema_lists(self.teacher, self.net, "copy")
        self.last_layer = [p for name, p in self.net.named_parameters() if "last_layer" in name]

    def loss(self, b: dict, it: int) -> torch.Tensor:
        for group in self.opt.param_groups:
            group["lr"] = self.lr(it - 1)
            if group.get("apply_weight_decay", True):
                group["weight_decay"] = self.wd(it - 1)
        crops = [b[k] for k in self.crops]
        self.teacher.eval()
        with torch.no_grad():
            teacher_out = self.teacher(crops[: self.n_global])
        student_out = self.net(crops)
        loss = self.loss_fn(student_out, teacher_out, self.temp(0))
        self.loss_fn.update_center(teacher_out)
        return loss

    def before_step(self, it: int) -> None:
        clip_gradients(self.net, self.clip)
        for p in self.last_layer:  # frozen during the first epoch
            p.grad = None

    def after_step(self, it: int) -> None:
        ema_(self.ema, self.momentum(it - 1))

    def state(self) -> dict[str, nn.Module | torch.Tensor]:
        return {"student": self.net, "teacher": self.teacher, "center": self.loss_fn.center}


class PlainCASS(PlainLoop):
    def __init__(self, *args: Any, loss_fn: Callable) -> None:
        super().__init__(*args)
        self.loss_fn = loss_fn

    def loss(self, b: dict, it: int) -> torch.Tensor:
        cnn_out, vit_out = self.net(b["image_v"])
        return self.loss_fn(cnn_out, vit_out)


class PlainCrossTeaching(PlainLoop):
    def __init__(self, *args: Any, loss_fn: CrossTeachingLoss, unsup_weight: Callable) -> None:
        super().__init__(*args)
        self.loss_fn, self.unsup_weight = loss_fn, unsup_weight

    def loss(self, b: dict, it: int) -> torch.Tensor:
        x_lb, y_lb, x_ulb = b["labeled"]["image"], b["labeled"]["label"], b["unlabeled"]["image"]
        sizes = [len(x_lb), len(x_ulb)]
        logits_cnn, logits_tr = self.net(torch.cat([x_lb, x_ulb]), output="both")
        lb_cnn, ulb_cnn = logits_cnn.float().split(sizes)
        lb_tr, ulb_tr = logits_tr.float().split(sizes)
        f = self.loss_fn
        loss_sup = f.supervised(lb_cnn, y_lb) + f.supervised(lb_tr, y_lb)
        return loss_sup + self.unsup_weight(it - 1) * (f.cross(ulb_cnn, ulb_tr) + f.cross(ulb_tr, ulb_cnn))


class PlainCurriculum(PlainLoop):
    """One curriculum stage: the task's own forward (input and target built from the views, head, loss)."""

    def __init__(self, *args: Any, task: str) -> None:
        super().__init__(*args)
        self.task = task

    def loss(self, b: dict, it: int) -> torch.Tensor:
        return self.net(self.task, b["image_v0"], b.get("image_v1"))["loss"]


# ------------------------------------------------------------------------------------------------ the cases
@dataclass
class Case:
    """One engine's benchmark: a bundle's network and batches, a fresh plain loop or trainer around them.

    Attributes:
        label: the table's engine column.
        model: the network and image size.
        batch: the batch composition.
        images: images per step (for images per second).
        network: the trained network, shared by both sides.
        batches: the in-memory batches, on the device.
        plain: a fresh :class:`PlainLoop` (new optimizer and helper copies).
        trainer: a fresh s4mi trainer over a loader.
        extra_state: the s4mi side's state besides the student and teachers (queue, centre, head).
        note: what the plain loop leaves out or does differently.
    """

    label: str
    model: str
    batch: str
    images: int
    network: nn.Module
    batches: list[dict]
    plain: Callable[[], PlainLoop]
    trainer: Callable[[Iterable], SSLTrainer]
    extra_state: Callable[[SSLTrainer], dict[str, nn.Module | torch.Tensor]] = lambda t: {}
    note: str = ""

    def trainer_state(self, trainer: SSLTrainer) -> dict[str, nn.Module | torch.Tensor]:
        """The s4mi side's student, teachers (by name) and extras, named as :meth:`PlainLoop.state`."""
        teachers = {name: t.ema_model for name, t in trainer.teachers.items()}
        return {"student": trainer.network, **teachers, **self.extra_state(trainer)}


def flat_state(state: Mapping[str, nn.Module | torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name.tensor_name: tensor}`` over modules' ``state_dict`` and plain tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, x in state.items():
        if isinstance(x, nn.Module):
            out.update({f"{name}.{k}": v.detach() for k, v in x.state_dict().items()})
        else:
            out[name] = x.detach()
    return out


@dataclass
class Setup:
    """What every case is built with."""

    small: bool = False
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)

    def config(self, bundle: str, file: str, **overrides: Any) -> ConfigParser:
        """A bundle's config with the device (and ``--small``'s sizes) set; parse only networks and values."""
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / bundle / "configs" / f"{file}.json"))
        parser["device"] = "cpu"
        for key, value in {**(SMALL if self.small else {}), **overrides}.items():
            if key in parser:
                parser[key] = value
        return parser

    def network(self, parser: ConfigParser, key: str = "network") -> nn.Module:
        torch.manual_seed(self.seed)
        return parser.get_parsed_content(key).to(self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator).to(self.device)

    def randint(self, high: int, *shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=self.generator).to(self.device, dtype)

    def trainer_kwargs(self, network: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable) -> dict:
        amp = {"amp": True, "amp_kwargs": {"dtype": torch.bfloat16}} if self.amp else {}
        return dict(
            device=self.device, max_epochs=1, train_data_loader=loader, network=network, optimizer=optimizer, **amp
        )

    def plain_args(self, network: nn.Module, optimizer: torch.optim.Optimizer) -> tuple:
        return network, optimizer, self.device, self.amp


def _sizes(parser: ConfigParser, *keys: str) -> list:
    return [parser[k] for k in keys]


def _semi_batches(s: Setup, n_lb: int, n_ulb: int, shape: Sequence[int], label: Callable[[], torch.Tensor]) -> list:
    """Labelled and unlabelled batches with a strong view each (the strong view a perturbed copy of the weak)."""
    batches = []
    for _ in range(2):
        x_lb, x_ulb = s.rand(n_lb, *shape), s.rand(n_ulb, *shape)
        strong = lambda x: (x + 0.1 * s.rand(*x.shape)).clamp(0, 1)  # noqa: E731
        batches.append(
            {
                "labeled": {"image": x_lb, "label": label(), "image_s": strong(x_lb)},
                "unlabeled": {"image": x_ulb, "image_s": strong(x_ulb)},
            }
        )
    return batches


def _views(s: Setup, n: int, shapes: Mapping[str, Sequence[int]]) -> list[dict]:
    return [{k: s.rand(n, *shape) for k, shape in shapes.items()} for _ in range(2)]


def _adam(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def case_supervised(s: Setup) -> Case:
    p = s.config("supervised_skin_classification", "train")
    net, (size, bs, c, k) = s.network(p), _sizes(p, "spatial_size", "batch_size", "in_channels", "num_classes")
    batches = [{"image": s.rand(bs, c, *size), "label": s.randint(k, bs)} for _ in range(2)]
    loss_fn = nn.CrossEntropyLoss()
    opt = lambda: _adam(net.parameters(), 1e-3, 1e-5)  # noqa: E731
    return Case(
        "FullySupervisedTrainer",
        f"DenseNet121 {size[0]} px",
        f"{bs}",
        bs,
        net,
        batches,
        lambda: PlainSupervised(*s.plain_args(net, opt()), loss_fn=loss_fn),
        lambda loader: FullySupervisedTrainer(**s.trainer_kwargs(net, opt(), loader), loss_function=loss_fn),
    )


def _mean_teacher_family(s: Setup, kind: str) -> Case:
    """Mean Teacher, SRC-MT and SRCL on their skin bundles (DenseNet-121, CE, softmax MSE, EMA 0.99 with warm-up).

    The unlabelled weights are the bundles' sigmoid ramps by epoch without SRC-MT's gate (which zeroes them in the
    first epochs), so every term counts in the step that is timed and checked."""
    bundle = {"mean_teacher": "mean_teacher_skin", "src_mt": "src_mt_skin", "srcl": "srcl_skin"}[kind]
    p = s.config(f"{bundle}_classification", "train")
    net = s.network(p)
    size, n_lb, n_ulb, c, k = _sizes(
        p, "spatial_size", "batch_size", "unlabeled_batch_size", "in_channels", "num_classes"
    )
    batches = _semi_batches(s, n_lb, n_ulb, (c, *size), lambda: s.randint(k, n_lb))
    head = None
    if kind == "srcl":
        torch.manual_seed(s.seed + 1)
        head = p.get_parsed_content("head").to(s.device)
    views = {"mean_teacher": "", "src_mt": " + relation", "srcl": " + relation + NT-Xent (4 views)"}[kind]
    return teacher_student_case(s, kind, net, batches, nn.CrossEntropyLoss(), f"DenseNet121 {size[0]} px{views}", head)


def teacher_student_case(
    s: Setup,
    kind: str,
    net: nn.Module,
    batches: list[dict],
    loss_fn: Callable,
    model: str,
    head: nn.Module | None = None,
    activation: str = "softmax",
    warmup: bool = True,
    unsup: Callable[[int], float] | None = None,
    unsup_every: str = "epoch",
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
) -> Case:
    """A Mean Teacher (``kind`` ``"mean_teacher"``), SRC-MT (``"src_mt"``: teacher in train mode, SRC-MT's relation
    term) or SRCL (``"srcl"``: also NT-Xent through ``head``) case on ``net`` and ``batches``: Adam, EMA 0.99 (with
    Mean Teacher's warm-up when ``warmup``), the unlabelled weight ``unsup`` by ``unsup_every`` (default the skin
    bundles' ``SigmoidRamp(10, 5)``)."""
    unsup = SigmoidRamp(10.0, 5) if unsup is None else unsup
    trainer_extra: dict[str, Any] = {}
    plain_extra: dict[str, Any] = {}
    params: Callable[[], list] = lambda: list(net.parameters())  # noqa: E731
    if kind in ("src_mt", "srcl"):
        relation, relation_weight = RelationConsistencyLoss("srcmt"), SigmoidRamp(1.0, 4)
        plain_extra = dict(teacher_train_mode=True, relation=relation, relation_weight=relation_weight)
        trainer_extra = dict(plain_extra, relation_weight_every="epoch")
    if kind == "srcl":
        assert head is not None
        contrastive, contrastive_weight = ContrastiveLoss(temperature=0.5), SigmoidRamp(1.0, 0)
        plain_extra.update(head=head, contrastive=contrastive, contrastive_weight=contrastive_weight)
        trainer_extra.update(
            head=head,
            contrastive_loss=contrastive,
            contrastive_weight=contrastive_weight,
            contrastive_weight_every="epoch",
        )
        params = lambda: list(net.parameters()) + list(head.parameters())  # noqa: E731
    trainer_cls = {"mean_teacher": MeanTeacherTrainer, "src_mt": SRCMTTrainer, "srcl": SRCLTrainer}[kind]

    def trainer(loader: Iterable) -> SSLTrainer:
        return trainer_cls(
            **s.trainer_kwargs(net, _adam(params(), lr, weight_decay), loader),
            loss_function=loss_fn,
            teachers=[EMATeacher(net, momentum=0.99, warmup="srcmt" if warmup else None)],
            unsup_weight=unsup,
            unsup_weight_every=unsup_every,
            activation=activation,
            **trainer_extra,
        )

    n_lb, n_ulb = len(batches[0]["labeled"]["image"]), len(batches[0]["unlabeled"]["image"])
    return Case(
        trainer_cls.__name__,
        model,
        f"{n_lb} lb + {n_ulb} ulb",
        n_lb + n_ulb,
        net,
        batches,
        lambda: PlainMeanTeacher(
            *s.plain_args(net, _adam(params(), lr, weight_decay)),
            loss_fn=loss_fn,
            unsup_weight=unsup,
            unsup_every=unsup_every,
            activation=activation,
            momentum=0.99,
            warmup=warmup,
            **plain_extra,
        ),
        trainer,
        (lambda t: {"head": t.head}) if kind == "srcl" else (lambda t: {}),
    )


def case_online_pseudo_label(s: Setup) -> Case:
    """The polyp bundle: FlexibleUNet (densenet-tiny), Dice, the online teacher (0.99 per step, buffers averaged,
    its own initial weights) labelling the strong view, and the student's momentum copy; no renderer."""
    p = s.config("online_pseudolabel_polyp_segmentation", "train")
    net = s.network(p)
    size, n_lb, n_ulb, c = _sizes(p, "spatial_size", "batch_size", "unlabeled_batch_size", "in_channels")
    batches = _semi_batches(s, n_lb, n_ulb, (c, *size), lambda: s.randint(2, n_lb, 1, *size, dtype=torch.float32))
    loss_fn = p.get_parsed_content("loss")
    opt = lambda: _adam(net.parameters(), 1e-4, 1e-5)  # noqa: E731

    def trainer(loader: Iterable) -> SSLTrainer:
        teacher = EMATeacher(net, momentum=0.99, buffers="update", name="teacher", sync_on_start=False)
        student_ema = EMATeacher(net, momentum=0.99, name="student_ema")
        return OnlinePseudoLabelTrainer(
            **s.trainer_kwargs(net, opt(), loader),
            loss_function=loss_fn,
            teachers=[teacher, student_ema],
            teacher_name="teacher",
            unsup_weight=0.3,
            teacher_view="strong",
            activation="sigmoid",
        )

    return Case(
        "OnlinePseudoLabelTrainer",
        f"FlexibleUNet (densenet-tiny) {size[0]} px",
        f"{n_lb} lb + {n_ulb} ulb",
        n_lb + n_ulb,
        net,
        batches,
        lambda: PlainOnlinePseudoLabel(
            *s.plain_args(net, opt()), loss_fn=loss_fn, beta=0.3, momentum=0.99, student_momentum=0.99
        ),
        trainer,
    )


def case_moco(s: Setup) -> Case:
    """S2MTS2's skin pretraining: DenseNet-121 (LeakyReLU) + 1024-1024-128 head, 2 key views, queue, shuffle-BN."""
    p = s.config("s2mts2_skin_classification", "pretrain")
    net = s.network(p)
    size, bs, c, queue_size, dim = _sizes(
        p, "spatial_size", "pretrain_batch_size", "in_channels", "queue_size", "embedding_dim"
    )
    views = 2
    batches = _views(s, bs, {"image_q": (c, *size), **{f"image_k{m}": (c, *size) for m in range(views)}})
    return moco_case(s, net, batches, views, queue_size, dim, f"DenseNet121 + 1024-1024-{dim} head {size[0]} px")


def moco_case(
    s: Setup,
    net: nn.Module,
    batches: list[dict],
    views: int,
    queue_size: int,
    dim: int,
    model: str,
    lam: Callable[[int], float] | None = None,
) -> Case:
    """A MoCo v2 / JCL case on ``net`` (the query encoder) and ``batches`` (``image_q`` and ``views`` key views):
    S2MTS2's SGD (0.03, momentum 0.9, weight decay 1e-4), key momentum 0.99, temperature 0.07, JCL's ``lam`` by
    epoch (default ``LinearRamp(2, 100, start=-1)``), shuffle-BN over 2 chunks."""
    lam = LinearRamp(2.0, 100, start=-1) if lam is None else lam
    opt = lambda: torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)  # noqa: E731

    def trainer(loader: Iterable) -> SSLTrainer:
        from s4mi.networks import KeyQueue

        key = EMATeacher(net, momentum=0.99, buffers="ema_train", name="key_encoder")
        return MoCoTrainer(
            **s.trainer_kwargs(net, opt(), loader),
            loss_function=JCLLoss(0.07),
            teachers=[key],
            queue=KeyQueue(dim, queue_size).to(s.device),
            jcl_lambda=lam,
            key_keys=[f"image_k{m}" for m in range(views)],
            shuffle_splits=2,
            shuffle_seed=0,
        )

    bs = len(batches[0]["image_q"])
    return Case(
        "MoCoTrainer",
        f"{model}, queue {queue_size}",
        f"{bs} (query + {views} key views)",
        bs,
        net,
        batches,
        lambda: PlainMoCo(
            *s.plain_args(net, opt()),
            views=views,
            queue_size=queue_size,
            dim=dim,
            tau=0.07,
            momentum=0.99,
            lam=lam,
            splits=2,
        ),
        trainer,
        lambda t: {"queue": t.queue.queue},
    )


def case_simclr(s: Setup) -> Case:
    p = s.config("srcl_two_stage_skin_classification", "pretrain")
    net = s.network(p)
    size, bs, c = _sizes(p, "spatial_size", "pretrain_batch_size", "in_channels")
    batches = _views(s, bs, {"image_v0": (c, *size), "image_v1": (c, *size)})
    loss_fn = ContrastiveLoss(temperature=0.5)
    opt = lambda: _adam(net.parameters(), 1e-3, 1e-6)  # noqa: E731
    return Case(
        "SimCLRTrainer",
        f"DenseNet121 + 1024-512-128 head {size[0]} px",
        f"{bs} (2 views)",
        bs,
        net,
        batches,
        lambda: PlainSimCLR(*s.plain_args(net, opt()), loss_fn=loss_fn),
        lambda loader: SimCLRTrainer(**s.trainer_kwargs(net, opt(), loader), loss_function=loss_fn),
    )


def case_dino(s: Setup) -> Case:
    """The skin DINO bundle: ViT (CropViT) + DINO head, 2 global and the bundle's local crops, AdamW over DINO's
    two groups, cosine learning-rate, weight-decay and teacher-momentum schedules (no warm-up here)."""
    p = s.config("dino_skin_classification", "pretrain")
    net = s.network(p)
    size, bs, c, n_local, out_dim = _sizes(
        p, "spatial_size", "pretrain_batch_size", "in_channels", "n_local_crops", "dino_out_dim"
    )
    hidden, layers = _sizes(p, "vit_hidden_size", "vit_layers")
    local = [size[0] // 2, size[1] // 2]
    crops = {f"image_g{i}": (c, *size) for i in range(2)} | {f"image_l{i}": (c, *local) for i in range(n_local)}
    batches = _views(s, bs, crops)
    lr = WarmupCosine(0.004 * bs / 256, 1e-6, SCHEDULE_LENGTH)
    wd = WarmupCosine(0.04, 0.4, SCHEDULE_LENGTH)
    momentum = WarmupCosine(0.99, 1.0, SCHEDULE_LENGTH)
    temp = 0.04
    loss = lambda: DINOLoss(out_dim, n_global_crops=2, student_temp=0.1, center_momentum=0.9).to(s.device)  # noqa: E731
    opt = lambda: torch.optim.AdamW(dino_param_groups(net), lr=lr(0))  # noqa: E731

    def trainer(loader: Iterable) -> SSLTrainer:
        teacher = EMATeacher(net, momentum=momentum, name="teacher")
        return DINOTrainer(
            **s.trainer_kwargs(net, opt(), loader),
            loss_function=loss(),
            teachers=[teacher],
            teacher_temp=temp,
            lr=lr,
            weight_decay=wd,
            freeze_last_layer=1,
            clip_grad=3.0,
            global_keys=["image_g0", "image_g1"],
            local_keys=[f"image_l{i}" for i in range(n_local)],
        )

    return Case(
        "DINOTrainer",
        f"ViT {layers}x{hidden} patch 8 + DINO head {out_dim}, {size[0]}/{local[0]} px",
        f"{bs} (2 global + {n_local} local crops)",
        bs,
        net,
        batches,
        lambda: PlainDINO(
            *s.plain_args(net, opt()),
            loss_fn=loss(),
            n_global=2,
            crops=list(crops),
            temp=lambda _: temp,
            lr=lr,
            wd=wd,
            momentum=momentum,
            clip=3.0,
        ),
        trainer,
        lambda t: {"center": t.loss_function.center},
    )


def case_cass(s: Setup) -> Case:
    p = s.config("cass_skin_classification", "pretrain")
    net = s.network(p)
    size, bs, c, hidden, layers = _sizes(
        p, "spatial_size", "pretrain_batch_size", "in_channels", "vit_hidden_size", "vit_layers"
    )
    batches = _views(s, bs, {"image_v": (c, *size)})
    loss_fn = CASSLoss()
    opt = lambda: _adam(net.param_groups(), 1e-3)  # noqa: E731
    return Case(
        "CASSTrainer",
        f"DenseNet121 + ViT {layers}x{hidden} {size[0]} px",
        f"{bs}",
        bs,
        net,
        batches,
        lambda: PlainCASS(*s.plain_args(net, opt()), loss_fn=loss_fn),
        lambda loader: CASSTrainer(**s.trainer_kwargs(net, opt(), loader), loss_function=loss_fn, image_key="image_v"),
    )


def case_cross_teaching(s: Setup) -> Case:
    """The skin cross-teaching bundle: UNet + SwinUNETR, the S4MI recipe (Adam 3.6e-4), 0.1 sigmoid ramp by step."""
    # SwinUNETR's bottleneck is 1/32 of the image: a 32 px image leaves 1 pixel, which instance norm refuses
    small = {"spatial_size": [64, 64], "batch_size": 2, "unlabeled_batch_size": 2} if s.small else {}
    p = s.config("cross_teaching_skin_segmentation", "train", **small)
    net = s.network(p)
    size, n_lb, n_ulb, c, k = _sizes(
        p, "spatial_size", "batch_size", "unlabeled_batch_size", "in_channels", "num_classes"
    )
    batches = _semi_batches(s, n_lb, n_ulb, (c, *size), lambda: s.randint(k, n_lb, 1, *size, dtype=torch.float32))
    loss_fn = CrossTeachingLoss().to(s.device)
    ramp = SigmoidRamp(0.1, 100)
    opt = lambda: _adam(net.param_groups(), 3.6e-4)  # noqa: E731
    return Case(
        "CrossTeachingTrainer",
        f"UNet + SwinUNETR {size[0]} px",
        f"{n_lb} lb + {n_ulb} ulb",
        n_lb + n_ulb,
        net,
        batches,
        lambda: PlainCrossTeaching(*s.plain_args(net, opt()), loss_fn=loss_fn, unsup_weight=ramp),
        lambda loader: CrossTeachingTrainer(
            **s.trainer_kwargs(net, opt(), loader),
            loss_function=loss_fn,
            unsup_weight=ramp,
            unsup_weight_every="iteration",
        ),
        note="the trainer also outputs both networks' argmax pseudo labels",
    )


def case_curriculum(s: Setup, task: str) -> Case:
    """One stage of the curricular CXR pretraining: the DenseNet-121 backbone and the task's head and loss."""
    p = s.config("curricular_ssl_cxr_classification", "pretrain", curriculum=[[task, 1]])
    net = s.network(p)
    size, bs, c = _sizes(p, "spatial_size", "pretrain_batch_size", "in_channels")
    two = net.tasks[task].views == 2
    view_keys = ["image_v0", "image_v1"] if two else ["image_v0"]
    batches = _views(s, bs, {k: (c, *size) for k in view_keys})
    opt = lambda: _adam(net.parameters(), 1e-3, 1e-6)  # noqa: E731
    return Case(
        f"CurriculumTrainer ({task})",
        f"DenseNet121 {size[0]} px, {task} head",
        f"{bs}" + (" (2 views)" if two else ""),
        bs,
        net,
        batches,
        lambda: PlainCurriculum(*s.plain_args(net, opt()), task=task),
        lambda loader: CurriculumTrainer(
            **s.trainer_kwargs(net, opt(), loader), curriculum=[[task, 1]], view_keys=view_keys
        ),
    )


def build_cases(engine: str, setup: Setup, curriculum_tasks: Sequence[str] = ("rotation", "contrastive")) -> list[Case]:
    """The case(s) of one engine (the curriculum gives one per task)."""
    setup.generator.manual_seed(setup.seed)
    if engine == "supervised":
        return [case_supervised(setup)]
    if engine in ("mean_teacher", "src_mt", "srcl"):
        return [_mean_teacher_family(setup, engine)]
    if engine == "curriculum":
        return [case_curriculum(setup, task) for task in curriculum_tasks]
    builders: dict[str, Callable[[Setup], Case]] = {
        "online_pseudo_label": case_online_pseudo_label,
        "moco": case_moco,
        "simclr": case_simclr,
        "dino": case_dino,
        "cass": case_cass,
        "cross_teaching": case_cross_teaching,
    }
    return [builders[engine](setup)]


# ------------------------------------------------------------------------------------------------ measuring
@dataclass
class Result:
    case: Case
    plain_s: list[float]
    s4mi_s: list[float]
    ratios: list[float]
    plain_peak: float | None
    s4mi_peak: float | None

    def row(self) -> str:
        c = self.case
        ratio = statistics.median(self.ratios)
        s4mi = statistics.median(self.s4mi_s)
        peak = "-" if self.plain_peak is None else f"{self.plain_peak:.0f} / {self.s4mi_peak:.0f}"
        return (
            f"| {c.label} | {c.model} | {c.batch} | {statistics.median(self.plain_s) * 1e3:.1f} | {s4mi * 1e3:.1f} | "
            f"{ratio:.3f} ({min(self.ratios):.3f}-{max(self.ratios):.3f}) | {c.images / s4mi:.1f} | {peak} |"
        )


def measure(case: Case, steps: int, rounds: int, device: str) -> Result:
    """The case's two sides in ``rounds`` alternating rounds of ``steps`` steps after a warm-up round."""
    peaks: dict[str, list[float]] = {"plain": [], "s4mi": []}

    def _peak(side: str) -> None:
        value = _peak_mib(device)
        if value is not None:
            peaks[side].append(value)

    def plain() -> float:
        loop = case.plain()
        _reset_peak(device)
        seconds = loop.run(case.batches, steps)
        _peak("plain")
        return seconds

    def ours() -> float:
        trainer = case.trainer(Cycle(case.batches, steps))
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        trainer.run()
        _sync(device)
        seconds = (time.perf_counter() - t0) / steps
        _peak("s4mi")
        return seconds

    print(f"## {case.label}", flush=True)
    plain_s, s4mi_s, ratios = side_by_side(plain, ours, rounds)
    return Result(
        case,
        plain_s,
        s4mi_s,
        ratios,
        max(peaks["plain"]) if peaks["plain"] else None,
        max(peaks["s4mi"]) if peaks["s4mi"] else None,
    )


def profile(case: Case, steps: int, device: str) -> list[str]:
    """Where an s4mi run of ``steps`` steps spends its time outside the maths: Ignite's
    :class:`~ignite.handlers.HandlersTimeProfiler` times every event handler (the engine's own: EMA teachers, ramp
    schedulers, stage switches) and the process function; lines of milliseconds per step, the costliest first, and
    the plain loop's step beside the process function."""
    from ignite.handlers import HandlersTimeProfiler

    trainer = case.trainer(Cycle(case.batches, steps))
    profiler = HandlersTimeProfiler()
    profiler.attach(trainer)
    trainer.run()
    results = profiler.get_results()
    handlers = [r for r in results[:-3] if isinstance(r[2], float)]
    total_handlers = sum(r[2] for r in handlers)
    processing = results[-2][2]
    plain = case.plain().run(case.batches, steps)
    lines = [
        f"{case.label}: process function {processing / steps * 1e3:.1f} ms/step (plain loop step "
        f"{plain * 1e3:.1f} ms), event handlers {total_handlers / steps * 1e3:.2f} ms/step in all"
    ]
    for name, event, total, *_ in sorted(handlers, key=lambda r: -r[2])[:6]:
        lines.append(f"  {name} on {event}: {total / steps * 1e3:.2f} ms/step")
    return lines


HEADER = (
    "| engine | model | batch | plain ms/step | s4mi ms/step | ratio s4mi / plain (median, range) | images/s (s4mi) | "
    "peak memory MiB (plain / s4mi) |\n|---|---|---|---|---|---|---|---|"
)


def machine_note(args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    if torch.device(args.device).type == "cuda":
        device = torch.cuda.get_device_name()
    else:
        cpuinfo = Path("/proc/cpuinfo")
        names = (
            [
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ]
            if cpuinfo.exists()
            else []
        )
        device = names[0] if names else platform.processor() or "CPU"
    return (
        f"{device}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} thread(s), "
        f"load average {load} at the start; {args.steps} steps x {args.rounds} rounds per engine"
        + (", bfloat16 autocast on both sides" if args.amp else "")
        + (", --small sizes" if args.small else ", the bundles' sizes")
    )


def main(argv: Sequence[str] | None = None) -> list[Result]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--engines",
        nargs="+",
        choices=list(ENGINES),
        default=list(ENGINES),
        metavar="ENGINE",
        help=f"subset of {', '.join(ENGINES)}",
    )
    p.add_argument(
        "--curriculum-task", nargs="+", default=["rotation", "contrastive"], help="the curriculum stage(s) timed"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on both sides")
    p.add_argument("--steps", type=int, default=4, help="steps per round and side")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--small", action="store_true", help="small images, batches and transformer widths (a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also time the s4mi side's event handlers per engine")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    note = machine_note(a)
    results = []
    profiles: list[str] = []
    for engine in a.engines:
        for case in build_cases(engine, Setup(a.small, a.device, a.amp, a.seed), a.curriculum_task):
            results.append(measure(case, a.steps, a.rounds, a.device))
            if a.profile:
                profiles.extend(profile(case, a.steps, a.device))
    print()
    print(
        "`"
        + " ".join(["python", "benchmarks/speed.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
        + "`"
    )
    print()
    print(f"Machine: {note}.")
    print()
    print(HEADER)
    for r in results:
        print(r.row())
    notes = [f"{r.case.label}: {r.case.note}" for r in results if r.case.note]
    if notes:
        print()
        print("Notes: " + "; ".join(notes) + ".")
    if torch.device(a.device).type != "cuda":
        print("Peak memory is measured on CUDA only (-).")
    if profiles:
        print()
        print("\n".join(profiles))
    bad = [r.case.label for r in results if not all(math.isfinite(x) for x in r.ratios)]
    if bad:
        raise SystemExit(f"non-finite ratios: {bad}")
    return results


if __name__ == "__main__":
    main()
