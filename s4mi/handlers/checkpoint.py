"""Checkpoint handlers: atomic saving and finding the run to resume."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from s4mi.bundle.distributed import is_main_process

__all__ = [
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "RandomStates",
    "ResumeLoader",
    "ResumeSaver",
    "latest_checkpoint",
]


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` that writes every file atomically.

    MONAI builds its disk savers with ``atomic=False`` (to keep files readable by others); a run killed while
    writing then leaves a truncated ``model.pt`` or resume checkpoint behind. Ignite's atomic mode writes to a
    temporary file in the same folder, then ``os.replace``-s it into place and adds group/other read permission,
    so nothing is lost by turning it back on. Arguments are those of :class:`~monai.handlers.CheckpointSaver`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler._atomic = True  # type: ignore[union-attr]

    def state_dict(self) -> dict[str, Any]:
        """The best-so-far list of the key-metric checkpoint (MONAI has ``load_state_dict`` but no counterpart).

        In a resume checkpoint this keeps a resumed run from overwriting ``model.pt`` with a worse model: without it
        the first validation after a restart always "improves" on an empty list.
        """
        return self._key_metric_checkpoint.state_dict() if self._key_metric_checkpoint is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)


class BestModelSaver:
    """Save, as ``<save_dir>/<filename>``, the best validated of several networks (e.g. a Mean Teacher's teacher and
    student), each validated by its own evaluator on the same data and key metric.

    MONAI's :class:`~monai.handlers.CheckpointSaver` keeps the best of one evaluator's network. A Mean Teacher run
    validates both teacher and student, and on a short schedule the student can be far better than the teacher
    (its EMA still lags), so exporting the teacher alone throws the better model away. Each evaluator but the one
    this saver is attached to reports its key metric through :meth:`watch`; when the attached evaluator completes,
    the saver compares the roles validated at that epoch (higher is better, a tie goes to the attached role), and
    writes the winner's plain state dict atomically whenever it beats the best saved so far. It logs which role it
    exported. Its ``state_dict`` (best metric, role, epoch) goes in the resume checkpoint, like ``CheckpointSaver``'s.

    Args:
        save_dir: the folder to write to (``ckpt_dir``).
        models: role -> network (``DataParallel``/``DistributedDataParallel`` are unwrapped).
        main: the role of the evaluator the saver is attached to.
        export: ``"best"`` (any role), one role (e.g. ``"teacher"``: the teacher only, as before), or ``"last"``: the
            main role at every validation, whatever its metric, so the file ends as the network of the last one (the
            reference code of some papers reports its last iteration).
        filename: the file name.

    Raises:
        ValueError: ``export`` is neither ``"best"`` nor a role, or ``main`` is not a role.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        models: Mapping[str, torch.nn.Module],
        main: str = "teacher",
        export: str = "best",
        filename: str = "model.pt",
    ) -> None:
        if main not in models:
            raise ValueError(f"BestModelSaver: main role {main!r} is not one of the models {sorted(models)}")
        if export not in ("best", "last") and export not in models:
            raise ValueError(f"export_model must be 'best', 'last' or one of {sorted(models)}, got {export!r}")
        self.path = Path(save_dir) / filename
        self.models = dict(models)
        self.main = main
        self.export = export
        self.best_metric = -float("inf")
        self.best_role = ""
        self.best_epoch = 0
        self._latest: dict[str, tuple[int, float, str]] = {}

    def watch(self, role: str) -> _MetricWatcher:
        """A handler to attach to ``role``'s evaluator: it reports that evaluator's key metric to this saver."""
        if role not in self.models:
            raise ValueError(f"BestModelSaver: {role!r} is not one of the models {sorted(self.models)}")
        return _MetricWatcher(self, role)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _record(self, role: str, engine: Engine) -> None:
        name = getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"BestModelSaver: the {role} evaluator has no key metric ({sorted(engine.state.metrics)})")
        self._latest[role] = (int(engine.state.epoch), float(engine.state.metrics[name]), str(name))

    def __call__(self, engine: Engine) -> None:
        self._record(self.main, engine)
        epoch = int(engine.state.epoch)
        roles = [self.main] + [r for r in self.models if r != self.main]
        now = {r: self._latest[r] for r in roles if r in self._latest and self._latest[r][0] == epoch}
        allowed = [self.main] if self.export == "last" else [r for r in now if self.export in ("best", r)]
        if not allowed:
            return
        role = max(allowed, key=lambda r: now[r][1])  # max keeps the first of equals: the main role
        value = now[role][1]
        if not (value > self.best_metric or self.export == "last"):
            return
        self.best_metric, self.best_role, self.best_epoch = value, role, epoch
        if not is_main_process():
            return
        net = self.models[role]
        if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            net = net.module
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
        os.replace(tmp, self.path)
        others = ", ".join(f"{r} {now[r][2]} {now[r][1]:.4f}" for r in now if r != role)
        logging.getLogger(__name__).info(
            f"s4mi: epoch {epoch}: exported the {role} ({now[role][2]} {value:.4f}"
            + (f"; {others}" if others else "")
            + f") to {self.path}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_role": self.best_role, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.best_metric = float(state_dict.get("best_metric", -float("inf")))
        self.best_role = str(state_dict.get("best_role", ""))
        self.best_epoch = int(state_dict.get("best_epoch", 0))


class _MetricWatcher:
    """Reports one evaluator's key metric to a :class:`BestModelSaver` (see :meth:`BestModelSaver.watch`)."""

    def __init__(self, saver: BestModelSaver, role: str) -> None:
        self.saver, self.role = saver, role

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: self.saver._record(self.role, e))


class RandomStates:
    """The process-wide random states (torch CPU and CUDA, NumPy, Python) as a checkpointable object.

    Put it in a resume checkpoint's ``save_dict`` so a resumed run draws what the uninterrupted run would have
    drawn (dropout, ``torch.randperm`` and anything else using the global generators). The state holds only
    tensors and plain numbers, so it loads with ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                "pos": pos,
                "has_gauss": has_gauss,
                "cached": cached,
            },
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class ResumeSaver:
    """Write the resume checkpoint at the end of every epoch and, optionally, every ``every_n_iterations``.

    MONAI's :class:`~monai.handlers.CheckpointSaver` saves at one level only (epoch or iteration), and an
    iteration-level save on an epoch's last iteration would come *before* that epoch's validation and
    learning-rate step: a run resumed from it would skip both. This saver writes at ``EPOCH_COMPLETED`` (after the
    handlers attached before it, such as validation) and at mid-epoch iterations only, names every file by the
    trainer's iteration (``checkpoint_iteration=N.pt``, which :func:`latest_checkpoint` orders), writes
    atomically and keeps the newest ``n_saved`` files, deleting older ones left by an earlier, killed process.
    Mid-epoch saves also skip iterations inside a gradient-accumulation window (the accumulated gradient is not
    saved). Under ``torch.distributed`` only the main process writes (and prunes) files. For an exact mid-epoch resume the ``save_dict`` must hold the data loader (a
    :class:`~s4mi.data.loaders.ResumableLoader` or :class:`~s4mi.data.loaders.SemiSupervisedLoader`) and
    :class:`RandomStates` besides the model, optimizer, scheduler, trainer and teachers.

    Args:
        save_dir: the resume folder.
        save_dict: objects with ``state_dict``/``load_state_dict``.
        every_n_iterations: mid-epoch save interval; 0 saves at epoch ends only.
        n_saved: files to keep.
    """

    PATTERN = "checkpoint_iteration={global_step}.{ext}"

    def __init__(self, save_dir: str, save_dict: dict[str, Any], every_n_iterations: int = 0, n_saved: int = 1) -> None:
        if every_n_iterations < 0 or n_saved < 1:
            raise ValueError(f"every_n_iterations must be >= 0 and n_saved >= 1, got {every_n_iterations}, {n_saved}")
        self.save_dir = Path(save_dir)
        self.every_n_iterations = int(every_n_iterations)
        self.checkpoint = Checkpoint(
            to_save=save_dict,
            save_handler=DiskSaver(str(save_dir), atomic=True, require_empty=False),
            filename_pattern=self.PATTERN,
            n_saved=n_saved,
            global_step_transform=lambda engine, _: engine.state.iteration,
        )

    def _mid_epoch(self, engine: Engine, iteration: int) -> bool:
        every, length = self.every_n_iterations, engine.state.epoch_length
        accumulation = int(getattr(engine, "accumulation_steps", 1) or 1)
        return (
            every > 0
            and iteration % every == 0
            and (length is None or iteration % length != 0)
            and (iteration % length if length else iteration) % accumulation == 0
        )

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self._mid_epoch), self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        self.checkpoint(engine)
        keep = {item.filename for item in self.checkpoint._saved}
        for f in self.save_dir.glob("checkpoint_iteration=*.pt"):
            if f.name not in keep:
                f.unlink(missing_ok=True)


class ResumeLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` that does nothing when ``load_path`` is empty.

    Bundles give it :func:`latest_checkpoint`'s answer, ``""`` on a fresh run, so one ``run`` list
    (``$@train#resume_loader.attach(@train#trainer)``) starts a run or resumes it, with no ``_disabled_`` flag and no
    ``if`` in the config. Arguments are those of :class:`~monai.handlers.CheckpointLoader`.
    """

    def __init__(self, load_path: str, load_dict: dict, **kwargs: Any) -> None:
        super().__init__(load_path=load_path or "", load_dict=load_dict, **kwargs)
        self.resumes = bool(load_path)

    def attach(self, engine: Engine) -> None:
        if self.resumes:
            super().attach(engine)


_STEP = re.compile(r"=(\d+)\.pt$")


def latest_checkpoint(folder: str | os.PathLike, max_epochs: int | None = None, pattern: str = "*.pt") -> str:
    """Return the newest resume checkpoint in ``folder`` (highest ``..._<event>=N.pt`` step), or ``""`` if none.

    Bundles use the empty string to disable their ``CheckpointLoader`` on a fresh run, so the same command
    starts a run or resumes it.

    With ``max_epochs``, a checkpoint whose run already completed ``max_epochs`` epochs is not resumed: resuming it
    would end at once and change nothing, which is what a second training request on new data (MONAI Label's
    ``/train``, say) must not do. Its files are renamed to ``*.pt.finished-<time>`` (kept, but no longer picked up) and ``""``
    is returned, so a new run starts. A run stopped before ``max_epochs``, or finished with fewer epochs than asked
    now, is resumed as before.
    """
    path = Path(folder)
    if not path.is_dir():
        return ""
    files = [f for f in path.glob(pattern) if f.is_file()]
    if not files:
        return ""

    def _key(f: Path) -> tuple[int, float]:
        m = _STEP.search(f.name)
        return (int(m.group(1)) if m else -1, f.stat().st_mtime)

    latest = max(files, key=_key)
    if max_epochs is not None:
        state = torch.load(latest, map_location="cpu", weights_only=True).get("trainer", {})
        # Ignite's Engine.state_dict() holds the iteration and the epoch length, not the epoch
        iteration, length = int(state.get("iteration", 0)), int(state.get("epoch_length") or 0)
        epoch, done = (iteration // length, iteration % length == 0) if length else (0, False)
        if epoch >= int(max_epochs) and done:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for f in files:
                os.replace(f, f.with_name(f"{f.name}.finished-{stamp}"))
            logging.getLogger(__name__).warning(
                f"{latest} is a finished run ({epoch} of {max_epochs} epochs): starting a new run "
                f"(its checkpoints are kept as *.pt.finished-<time>)"
            )
            return ""
    return str(latest)
