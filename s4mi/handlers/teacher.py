"""EMA ("mean teacher", "momentum encoder") copies of a student network, updated by an Ignite handler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

__all__ = ["EMATeacher", "online_momentum"]

_UPDATE_EVENTS = {"iteration": Events.ITERATION_COMPLETED, "epoch": Events.EPOCH_COMPLETED}


def _check_momentum(m: float) -> float:
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"teacher momentum must be in [0, 1], got {m}")
    return m


class EMATeacher(EMAHandler):
    r"""An exponential-moving-average teacher of a student network, as an Ignite/MONAI handler.

    After every update (each iteration, or each epoch with ``every="epoch"``) the teacher's weights become

    .. math:: \theta'_{t+1} = m_t\,\theta'_t + (1 - m_t)\,\theta_{t+1}

    where :math:`\theta` are the student's weights and :math:`m_t` is the *teacher's* weight, as in the papers:
    Mean Teacher (Tarvainen & Valpola, NeurIPS 2017), MoCo (He et al., CVPR 2020; m = 0.999), SRC-MT
    (Liu et al., TMI 2020; m = 0.99), S2MTS2 (Liu et al., MLMI 2021) and online pseudo-labelling with momentum
    teachers (Pham Van et al., 2022; m = 0.95 or 0.99, updated once per epoch).

    This extends :class:`ignite.handlers.EMAHandler`, which deep-copies the student, unwraps
    ``DistributedDataParallel``, detaches the copy's parameters and handles buffers, and changes what does not
    fit semi-supervised training:

    - ``momentum`` is the papers' :math:`m` (teacher weight); Ignite's is the student weight :math:`1 - m`.
      ``engine.state.<name>_momentum`` holds the :math:`m_t` of the latest update (or of the next one before
      the first), so loggers can read it; Ignite's own ``momentum`` attribute is kept as :math:`1 - m_t`.
    - :math:`m_t` is computed from the update count :math:`t` (0-based: the updates done before this one),
      which is read from the engine (``iteration - 1`` or ``epoch - 1``) instead of counted: a resumed run
      continues the exact schedule with no extra state, and several teachers can share an engine. Ignite's
      warm-up writes to a hard-coded ``engine.state.ema_momentum`` whatever ``name`` is given, and counts events
      in a scheduler that is not checkpointed.
    - The update is two fused ``torch._foreach_*`` calls over all floating-point tensors instead of a Python
      loop of two kernels per tensor (same arithmetic, same numbers). The (teacher, student) tensor lists are
      gathered once per run and reused by every update of that run: walking both networks' modules for their
      parameters and buffers cost more than the update itself (about 7 ms per step for DenseNet-121 on a CPU,
      ``benchmarks/speed.py``). They are gathered anew at each ``STARTED`` and after :meth:`sync`, so a network
      moved or rebuilt between runs is picked up; do not move the networks to another device in the middle of a
      run (``Module.to`` replaces buffer tensors).
    - Copied buffers (and integer buffers under ``"update"``) are copied in place; Ignite assigns
      ``ema_b.data = model_b.data``, which makes the teacher's buffers *the same storage* as the student's, so
      loading a checkpoint into the teacher would overwrite the student's running statistics.
    - ``DataParallel`` is unwrapped too (Ignite unwraps only ``DistributedDataParallel``).
    - The teacher is re-synced from the student when a fresh run starts (see ``sync_on_start``), because the
      deep copy is taken when the handler is built, before any ``CheckpointLoader`` loads pretrained weights.
    - ``state_dict``/``load_state_dict`` return/load the teacher's weights, so ``{"teacher": teacher}`` can go
      straight into a checkpoint's ``save_dict``/``load_dict`` (``teacher.ema_model`` works too).

    Args:
        model: the student. ``DataParallel``/``DistributedDataParallel`` wrappers are removed. Move it to its
            device before building the teacher (the teacher is also moved to the student's device when synced).
        momentum: the teacher weight :math:`m \in [0, 1]`, or a callable of the update count :math:`t` returning
            :math:`m_t` (a schedule, e.g. a cosine increase to 1 as in BYOL/DINO).
        warmup: ``None`` for :math:`m_t = m`; ``"srcmt"`` for :math:`m_t = \min(1 - 1/(t + 1), m)`, the Mean
            Teacher/SRC-MT warm-up that makes the teacher the true average of the students seen so far
            (:math:`m_0 = 0`: after the first update the teacher equals the student).
        every: ``"iteration"`` (update at ``ITERATION_COMPLETED``) or ``"epoch"`` (at ``EPOCH_COMPLETED``).
        buffers: ``"copy"`` the student's buffers (e.g. BatchNorm running statistics) at each update,
            ``"update"`` them by EMA like the weights (integer buffers such as ``num_batches_tracked`` are
            copied), or ``"ema_train"``: keep the teacher in train mode and leave its buffers to its own forward
            passes (Ignite's option).
        name: the teacher's name; its momentum is stored in ``engine.state.<name>_momentum``. Give each teacher
            on an engine its own name.
        sync_on_start: copy the student into the teacher when a fresh run (``engine.state.iteration == 0``)
            starts, both at ``STARTED`` and at the first ``EPOCH_STARTED``, so the result does not depend on
            whether a ``CheckpointLoader`` (also run at ``STARTED``) was attached before or after the teacher.
            Never on resume. Set it to False when the teacher gets its own initial weights (e.g. a stage-0
            teacher loaded from another checkpoint).

    Attributes:
        model: the (unwrapped) student.
        ema_model: the teacher, in eval mode (train mode with ``buffers="ema_train"``), all parameters with
            ``requires_grad=False``.

    Note:
        The update runs *first* among the handlers of its event, wherever the teacher is attached, so that a
        ``CheckpointSaver`` or a validation on the same event sees this step's teacher (Ignite runs handlers in
        the order attached, and MONAI attaches a trainer's ``train_handlers`` during its ``__init__``, before an
        engine can attach its own teachers). A checkpoint labelled with step ``k`` then holds the teacher after
        update ``k``, which is what an exact resume needs.

    Example:
        .. code-block:: python

            teacher = EMATeacher(student, momentum=0.99, warmup="srcmt")
            teacher.attach(trainer)  # or pass it to SemiSupervisedTrainer(teachers=[teacher])
            saver = CheckpointSaver(save_dir, {"student": student, "teacher": teacher, "trainer": trainer}, ...)
            with torch.no_grad():
                target = teacher.ema_model(images)
    """

    def __init__(
        self,
        model: nn.Module,
        momentum: float | Callable[[int], float] = 0.999,
        warmup: Literal["srcmt"] | None = None,
        every: Literal["iteration", "epoch"] = "iteration",
        buffers: Literal["copy", "update", "ema_train"] = "copy",
        name: str = "teacher",
        sync_on_start: bool = True,
    ) -> None:
        if isinstance(model, nn.DataParallel):
            model = model.module
        if warmup not in (None, "srcmt"):
            raise ValueError(f"warmup must be None or 'srcmt', got {warmup!r}")
        if every not in _UPDATE_EVENTS:
            raise ValueError(f"every must be 'iteration' or 'epoch', got {every!r}")
        if not callable(momentum):
            momentum = _check_momentum(float(momentum))
        # Ignite checks its own convention (student weight strictly inside (0, 1)); the weight actually used is
        # computed per update, so any valid placeholder will do.
        super().__init__(model, momentum=0.5, handle_buffers=buffers)
        self.teacher_momentum = momentum
        self.warmup = warmup
        self.every = every
        self.name = name
        self.sync_on_start = sync_on_start
        self.ema_model.requires_grad_(False)
        self.momentum = 1.0 - self.momentum_at(0)
        self._run_pairs: tuple[list[torch.Tensor], ...] | None = None

    @property
    def state_name(self) -> str:
        """The ``engine.state`` attribute that holds the current teacher momentum."""
        return f"{self.name}_momentum"

    def momentum_at(self, t: int) -> float:
        """The teacher weight :math:`m_t` of update ``t`` (0-based), after warm-up."""
        m = float(self.teacher_momentum(t)) if callable(self.teacher_momentum) else self.teacher_momentum
        if self.warmup == "srcmt":
            m = min(1.0 - 1.0 / (t + 1), m)
        return _check_momentum(m)

    def _updates_done(self, engine: Engine) -> int:
        """Updates completed so far, derived from the engine's counters (0-based index of the next update)."""
        return engine.state.iteration if self.every == "iteration" else engine.state.epoch

    def attach(
        self,
        engine: Engine,
        name: str | None = None,
        warn_if_exists: bool = True,
        event: Any = None,
    ) -> None:
        """Register the update (and the start-of-run sync) on ``engine``.

        ``engine`` is the only argument needed (MONAI calls ``handler.attach(engine)``). ``name`` overrides the
        state attribute (default ``"<name>_momentum"``); ``warn_if_exists`` is accepted for compatibility with
        :meth:`ignite.handlers.EMAHandler.attach` and unused (nothing warns on resume); ``event`` is not
        supported: the update event follows ``every``, because the schedule is indexed by the update count.

        Raises:
            ValueError: if ``event`` is given, or ``engine.state`` already has the attribute (another teacher
                with the same name, or this one attached twice).
        """
        if event is not None:
            raise ValueError(
                "EMATeacher updates on the event set by `every` ('iteration' or 'epoch'); `event` is unused"
            )
        attr = name or self.state_name
        if hasattr(engine.state, attr):
            raise ValueError(f"engine.state.{attr} already exists: give each teacher on an engine its own name")
        setattr(engine.state, attr, self.momentum_at(self._updates_done(engine)))
        engine.add_event_handler(Events.STARTED, self._forget_pairs)
        if self.sync_on_start:
            engine.add_event_handler(Events.STARTED, self._sync_if_fresh)
            engine.add_event_handler(Events.EPOCH_STARTED, self._sync_if_fresh)
        update_event = _UPDATE_EVENTS[self.every]
        engine.add_event_handler(update_event, self._update_ema_model, attr)
        # Run the update before the event's other handlers, whenever attached: a CheckpointSaver or a validation
        # of the teacher on the same event must see this step's teacher (Ignite has no handler priorities).
        handlers = engine._event_handlers[update_event]
        handlers.insert(0, handlers.pop())

    def _forget_pairs(self, engine: Engine | None = None) -> None:
        """Gather the tensor lists anew at the next update (a run starts; the networks may have changed)."""
        self._run_pairs = None

    def _sync_if_fresh(self, engine: Engine) -> None:
        if engine.state.iteration == 0:
            self.sync()

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        m = self.momentum_at(self._updates_done(engine) - 1)
        setattr(engine.state, name, m)
        self.momentum = 1.0 - m
        if self._run_pairs is None:
            self._run_pairs = self._pairs()
        self.update(m, self._run_pairs)

    def _pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(teacher, student) tensors to average, then (teacher, student) tensors to copy, per ``handle_buffers``."""
        ema_avg: list[torch.Tensor] = []
        avg: list[torch.Tensor] = []
        ema_copy: list[torch.Tensor] = []
        copy: list[torch.Tensor] = []
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = list(
            zip(self.ema_model.parameters(), self.model.parameters(), strict=True)
        )
        buffer_pairs = list(zip(self.ema_model.buffers(), self.model.buffers(), strict=True))
        if self.handle_buffers == "update":
            pairs += buffer_pairs
        elif self.handle_buffers == "copy":
            ema_copy += [e for e, _ in buffer_pairs]
            copy += [s for _, s in buffer_pairs]
        for e, s in pairs:
            if e.is_floating_point() or e.is_complex():
                ema_avg.append(e)
                avg.append(s)
            else:
                ema_copy.append(e)
                copy.append(s)
        return ema_avg, avg, ema_copy, copy

    @torch.no_grad()
    def update(self, momentum: float, pairs: tuple[list[torch.Tensor], ...] | None = None) -> None:
        """One EMA step, teacher <- m * teacher + (1 - m) * student, with ``momentum`` = m (papers' convention).

        ``m = 1`` leaves the teacher exactly as it is, buffers included (a fixed teacher, as in offline
        pseudo-labelling, is an ``EMATeacher`` with momentum 1). ``pairs``: the tensor lists of :meth:`_pairs`,
        gathered earlier (the handler reuses one gathering per run); None gathers them now.
        """
        m = _check_momentum(float(momentum))
        if m == 1.0:
            # A frozen teacher (offline pseudo-labelling): nothing moves, buffers included.
            return
        ema_avg, avg, ema_copy, copy = self._pairs() if pairs is None else pairs
        if m == 0.0:
            # A plain copy: also exact when the teacher holds non-finite values (0 * inf is nan).
            ema_copy, copy = ema_copy + ema_avg, copy + avg
        elif ema_avg:
            torch._foreach_mul_(ema_avg, m)
            torch._foreach_add_(ema_avg, avg, alpha=1.0 - m)
        if ema_copy:
            torch._foreach_copy_(ema_copy, copy)

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the student's weights and buffers into the teacher (moving it to the student's device)."""
        devices = {p.device for p in self.model.parameters()}
        if len(devices) == 1:
            self.ema_model.to(devices.pop())
        self._forget_pairs()  # moving the teacher replaces its buffer tensors
        for e, s in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
            e.copy_(s)
        for eb, sb in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            eb.copy_(sb)

    def state_dict(self) -> dict[str, Any]:
        """The teacher's ``state_dict`` (what a checkpoint stores for this handler)."""
        return self.ema_model.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Load teacher weights saved by :meth:`state_dict` (or any ``state_dict`` of the student's architecture)."""
        return self.ema_model.load_state_dict(state_dict, strict=strict)


def online_momentum(online: bool | str, momentum: float) -> float:
    """The pseudo-label teacher's EMA momentum in online pseudo-labelling (Pham Van et al. 2022).

    An online teacher keeps learning from the student, ``teacher <- m teacher + (1 - m) student``, so its momentum
    is ``momentum``; an offline one stays as pretrained, which :class:`EMATeacher` does with momentum 1.

    Args:
        online: whether the teacher learns from the student (a command-line string such as ``"false"`` is read).
        momentum: its momentum when online, in [0, 1].
    """
    from s4mi.bundle import as_bool

    return _check_momentum(momentum) if as_bool(online) else 1.0
