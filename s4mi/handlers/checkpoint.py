"""Checkpoint handlers: atomic saving and finding the run to resume."""

from __future__ import annotations

import logging
import math
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
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader, CheckpointSaver

from s4mi.bundle.distributed import is_main_process
from s4mi.bundle.outputs import ensure_writable
from s4mi.handlers.non_finite import check_finite_checkpoint

__all__ = [
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "CheckpointError",
    "FiniteSaveHandler",
    "RandomStates",
    "ResumeLoader",
    "ResumeSaver",
    "check_state_fits",
    "latest_checkpoint",
    "read_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit what loads it; the message names the file."""


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with an error that names the file when it cannot be read.

    A run killed by an older, non-atomic writer, a copy cut short or a file that is not a PyTorch checkpoint
    makes ``torch.load`` fail with a zip-archive or unpickling message that names no file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated, corrupt or holds more than tensors and plain containers.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # zip, pickle, EOF and weights-only errors alike; torch names no file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"{what} {p} ({p.stat().st_size} bytes) cannot be read: it is truncated, corrupt or not a weights-only "
            f"PyTorch checkpoint ({type(e).__name__}: {reason}). Move it away (a resume checkpoint: the run then "
            "starts from the one before, or afresh) or point to another file."
        ) from e


def check_state_fits(module: torch.nn.Module, state: Any, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Check that ``state`` is a state dict with ``module``'s keys and shapes, before loading it.

    ``load_state_dict`` raises a size-mismatch list that names no file and no likely cause.

    Raises:
        CheckpointError: not a state dict, or keys missing, unexpected or of another shape (the first ones named).
    """
    if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        module = module.module
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} {path}: expected a state dict for the network, found {type(state).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} here"
        for k, v in own.items()
        if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = [
        f"{len(items)} {label}, e.g. {items[:3]}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{what} {path} does not fit this network ({type(module).__name__}): weights {'; '.join(problems)}. "
            "It was written by another bundle or with another network setting (num_classes, in_channels, "
            "channels, spatial_dims, ...)."
        )


def state_bytes(objects: Mapping[str, Any]) -> int:
    """About how many bytes a checkpoint of ``objects`` takes: their tensors, plus two per parameter for an optimizer
    whose moments are not made yet (Adam's before its first step)."""

    def size(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            return x.numel() * x.element_size()
        if isinstance(x, Mapping):
            return sum(size(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(size(v) for v in x)
        return 0

    total = 0
    for obj in objects.values():
        if isinstance(obj, torch.optim.Optimizer) and not obj.state:
            total += 2 * sum(size(p) for g in obj.param_groups for p in g["params"])
        elif hasattr(obj, "state_dict") and not isinstance(obj, Engine):
            try:
                total += size(obj.state_dict())
            except Exception:  # a state that cannot be read before the run starts: left out of the estimate
                continue
    return total


class FiniteSaveHandler(BaseSaveHandler):
    """An Ignite save handler (around a :class:`~ignite.handlers.DiskSaver`) that refuses to write a checkpoint
    holding a NaN or an infinity, and removes an older file only once its successor is written.

    :class:`~s4mi.handlers.NonFiniteGuard` stops a run before a non-finite step; this is the last line behind it
    (a guard left out of a handler list, a non-finite buffer no loss shows). Ignite's ``Checkpoint`` removes the
    file it replaces *before* writing the new one (and MONAI's saver removes ``model.pt`` before rewriting it), so a
    refused or killed write would still lose the last good file: removals wait here until the next write has
    succeeded (a file rewritten under its own name is replaced atomically instead). Other attributes (``dirname``,
    ...) are the wrapped handler's.

    Raises:
        NonFiniteError: the checkpoint holds a non-finite floating-point tensor (naming the file and the entries).
    """

    def __init__(self, inner: BaseSaveHandler) -> None:
        self.inner = inner
        self._pending: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        fixed = getattr(self.inner, "filename", None)  # MONAI's saver may fix the file name
        check_finite_checkpoint(checkpoint, Path(getattr(self.inner, "dirname", ".")) / (fixed or filename))
        self.inner(checkpoint, filename, metadata)
        pending, self._pending = self._pending, []
        for old in pending:
            if (fixed or old) != (fixed or filename):
                self.inner.remove(old)

    def remove(self, filename: str) -> None:
        self._pending.append(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` that writes every file atomically.

    MONAI builds its disk savers with ``atomic=False`` (to keep files readable by others); a run killed while
    writing then leaves a truncated ``model.pt`` or resume checkpoint behind. Ignite's atomic mode writes to a
    temporary file in the same folder, then ``os.replace``-s it into place and adds group/other read permission,
    so nothing is lost by turning it back on. A checkpoint holding a NaN or an infinity is not written
    (:class:`FiniteSaveHandler`). Arguments are those of :class:`~monai.handlers.CheckpointSaver`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler._atomic = True  # type: ignore[union-attr]
                ckpt.save_handler = FiniteSaveHandler(ckpt.save_handler)  # type: ignore[assignment]

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` after checking that ``save_dir`` can be written to (before any training step)."""
        if is_main_process():
            ensure_writable(self.save_dir, state_bytes(self.save_dict), f"checkpoints ({', '.join(self.save_dict)})")
        super().attach(engine)

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
        if is_main_process():
            ensure_writable(self.path.parent, state_bytes(self.models) // max(len(self.models), 1), "the best model")
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
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        check_finite_checkpoint(state, self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(state, tmp)
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
            save_handler=FiniteSaveHandler(DiskSaver(str(save_dir), atomic=True, require_empty=False)),
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
        if is_main_process():
            ensure_writable(self.save_dir, state_bytes(self.checkpoint.to_save), "resume checkpoints")
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
    """MONAI's :class:`~monai.handlers.CheckpointLoader` that does nothing when ``load_path`` is empty, and keeps a
    learning rate changed since the checkpoint was written (see :meth:`_apply_learning_rate`).

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

    def check(self) -> None:
        """Check the checkpoint before anything loads: readable, this bundle's objects, this network's shapes.

        Raises:
            CheckpointError: naming the file and what does not fit.
        """
        path = self.load_path
        ckpt = read_checkpoint(path, "resume checkpoint")
        if not isinstance(ckpt, Mapping):
            raise CheckpointError(f"resume checkpoint {path} holds a {type(ckpt).__name__}, not a dict of objects")
        if len(self.load_dict) == 1:  # Ignite saves a single object's state itself, and MONAI loads it so
            (only,) = self.load_dict
            ckpt = ckpt if only in ckpt else {only: ckpt}
        missing = sorted(k for k in self.load_dict if k not in ckpt)
        extra = sorted(k for k in ckpt if k not in self.load_dict)
        if missing or extra:
            raise CheckpointError(
                f"resume checkpoint {path} is not one of this training stage's: it holds {sorted(ckpt)}, this stage "
                f"resumes {sorted(self.load_dict)} (missing {missing}, unexpected {extra}). It was written by another "
                "bundle or stage: give this run its own --output_dir, or move the resume folder away to start afresh."
            )
        for name, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                check_state_fits(obj, ckpt[name], path, f"resume checkpoint ({name!r} of)")

    def __call__(self, engine: Engine) -> None:
        self.check()
        optimizers = [o for o in self.load_dict.values() if isinstance(o, torch.optim.Optimizer)]
        asked = [[float(g.get("initial_lr", g["lr"])) for g in o.param_groups] for o in optimizers]
        try:
            super().__call__(engine)
        except Exception as e:
            raise CheckpointError(f"resume checkpoint {self.load_path} cannot be loaded into this run: {e}") from e
        for optimizer, lrs in zip(optimizers, asked):
            self._apply_learning_rate(optimizer, lrs)

    def _apply_learning_rate(self, optimizer: torch.optim.Optimizer, asked: list[float]) -> None:
        """Keep the learning rate the config asks for when it differs from the checkpoint's.

        Loading an optimizer's state restores its learning rate (and its scheduler's ``base_lrs``), so a
        ``--learning_rate`` override given to resume a run (after a non-finite loss, say) would be ignored. Each
        parameter group whose configured initial rate differs from the checkpoint's has its current rate, its
        ``initial_lr`` and its schedulers' base and last rates scaled by the ratio, so the schedule goes on from
        where it stopped at the new scale; a resume with an unchanged config is left exactly as saved.
        """
        saved = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        if len(saved) != len(asked) or all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(asked, saved)):
            return
        schedulers = [
            s
            for s in self.load_dict.values()
            if isinstance(s, torch.optim.lr_scheduler.LRScheduler) and s.optimizer is optimizer
        ]
        for i, (group, new, old) in enumerate(zip(optimizer.param_groups, asked, saved)):
            ratio = new / old if old else 1.0
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] = new
            for s in schedulers:
                s.base_lrs[i] *= ratio
                if getattr(s, "_last_lr", None):
                    s._last_lr[i] *= ratio
        logging.getLogger(__name__).warning(
            f"s4mi: resuming {self.load_path} with learning rate {asked} (the checkpoint's was {saved}): the schedule "
            "goes on from where it stopped, scaled to the new rate"
        )


_STEP = re.compile(r"=(\d+)\.pt$")


def latest_checkpoint(
    folder: str | os.PathLike, max_epochs: int | None = None, pattern: str = "*.pt", restart_finished: object = True
) -> str:
    """Return the newest resume checkpoint in ``folder`` (highest ``..._<event>=N.pt`` step), or ``""`` if none.

    Bundles use the empty string to disable their ``CheckpointLoader`` on a fresh run, so the same command
    starts a run or resumes it.

    With ``max_epochs``, a checkpoint whose run already completed ``max_epochs`` epochs is not resumed: resuming it
    would end at once and change nothing, which is what a second training request on new data (MONAI Label's
    ``/train``, say) must not do. Its files are renamed to ``*.pt.finished-<time>`` (kept, but no longer picked up) and ``""``
    is returned, so a new run starts. A run stopped before ``max_epochs``, or finished with fewer epochs than asked
    now, is resumed as before.

    ``restart_finished`` false (the bundles pass their ``overwrite_model``) keeps a finished run's checkpoint instead,
    except under MONAI Label (its server or its multi-GPU training command), whose every ``/train`` is a new run.
    Resuming it ends at once and writes nothing, so the same command repeated after a run was killed between its last
    checkpoint and its exit (or after it ended) does nothing, rather than starting a new run that would replace the
    finished run's model.
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
        state = read_checkpoint(latest, "resume checkpoint").get("trainer", {})
        # Ignite's Engine.state_dict() holds the iteration and the epoch length, not the epoch
        iteration, length = int(state.get("iteration", 0)), int(state.get("epoch_length") or 0)
        epoch, done = (iteration // length, iteration % length == 0) if length else (0, False)
        if epoch >= int(max_epochs) and done:
            from s4mi.bundle import as_bool
            from s4mi.bundle.outputs import _inside_monai_label

            # MONAI Label's /train (its own apps too, which pass no overwrite_model) always asks for a new run
            if not as_bool(restart_finished) and not _inside_monai_label():
                logging.getLogger(__name__).warning(
                    f"{latest} is a finished run ({epoch} of {max_epochs} epochs): nothing left to train (more "
                    "--max_epochs go on from it; --overwrite_model true trains a new run over it)"
                )
                return str(latest)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for f in files:
                os.replace(f, f.with_name(f"{f.name}.finished-{stamp}"))
            logging.getLogger(__name__).warning(
                f"{latest} is a finished run ({epoch} of {max_epochs} epochs): starting a new run "
                f"(its checkpoints are kept as *.pt.finished-<time>)"
            )
            return ""
    return str(latest)
