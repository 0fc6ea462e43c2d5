"""Where a training run writes its weights, and the guard that keeps it from replacing a model silently."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path

from .overrides import BundleConfigError, _argv_overrides

__all__ = ["OutputFolderError", "ensure_writable", "protect_model", "run_ckpt_dir"]


class OutputFolderError(OSError):
    """A run's output folder cannot be made or written to, or lacks the space its checkpoints need."""


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def ensure_writable(folder: str | os.PathLike, need_bytes: int = 0, what: str = "checkpoints") -> Path:
    """Check, before a run trains, that ``folder`` can be made and written to and has ``need_bytes`` free.

    A read-only or full folder otherwise shows up when the first checkpoint is written, after an epoch of training
    (or hours of it), as an ``OSError`` from deep inside a saver. This makes the folder, writes and removes a probe
    file in it, and compares the free space with ``need_bytes``.

    Args:
        folder: the folder a saver writes to.
        need_bytes: about how many bytes one file of it takes (0: no space check).
        what: what is written there, for the message.

    Returns:
        the folder.

    Raises:
        OutputFolderError: naming the folder, what is written there and why it cannot be (read-only, not a folder,
            no space).
    """
    path = Path(folder)
    hint = "give the run a writable folder with free space (--output_dir, --ckpt_dir) or free some space"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".s4mi-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"s4mi")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputFolderError(
            e.errno, f"cannot write {what} to {path}: {reason}; {hint}, before training starts"
        ) from e
    free = shutil.disk_usage(path).free
    if need_bytes and free < need_bytes:
        raise OutputFolderError(
            errno.ENOSPC,
            f"{path} has {_mb(free)} free but its {what} need about {_mb(need_bytes)}; {hint}, before training starts",
        )
    return path


def run_ckpt_dir(bundle_root: str | os.PathLike, output_dir: str | os.PathLike) -> str:
    """A training stage's default ``ckpt_dir``: ``<output_dir>/models``, or the bundle's ``models/`` for the default run.

    A bundle's ``models/model.pt`` is what ``inference.json``, MONAI Label and a model-zoo user load, so a run with
    the default ``output_dir`` (``<bundle_root>/runs``) keeps writing there; a run given its own ``--output_dir``
    (a smoke test, an experiment) writes its weights beside its logs and leaves the bundle's model alone.
    ``--ckpt_dir`` still wins over both.
    """
    root, out = Path(bundle_root), Path(output_dir)
    if out.resolve() == (root / "runs").resolve():
        return str(root / "models")
    return str(out / "models")


def _inside_monai_label() -> bool:
    """MONAI Label trains on from the bundle's ``models/model.pt`` and is meant to replace it: in its server
    (in-process training) or its multi-GPU command (a ``monailabel_train.json`` config)."""
    if "monailabel" in sys.modules:
        return True
    parsed = _argv_overrides(sys.argv)
    files = parsed[0].get("config_file") if parsed else None
    names = [files] if isinstance(files, str) else list(files or [])
    return any(Path(str(f)).name.startswith("monailabel_") for f in names)


def protect_model(path: str | os.PathLike, resume_ckpt: str | os.PathLike = "", overwrite: object = False) -> str:
    """Stop a fresh training run, before it trains, that would replace an existing model file.

    Called in the ``run`` list of every training stage with ``@ckpt_dir + '/model.pt'``. A resumed run (its
    ``resume_ckpt`` is set) continues the run that wrote the file and passes; so do ``overwrite`` (the bundle's
    ``overwrite_model``) and MONAI Label's training, which fine-tunes the bundle's model in place.

    Args:
        path: the model file the run's best-model saver writes.
        resume_ckpt: the run's resume checkpoint ("" on a fresh run).
        overwrite: ``overwrite_model`` (a bool, or the string fire passes).

    Returns:
        ``path``, as a string.

    Raises:
        BundleConfigError: ``path`` exists, the run is fresh and replacing it was not asked for.
    """
    from s4mi.bundle import as_bool

    p = Path(path)
    if resume_ckpt or as_bool(overwrite) or not p.is_file() or _inside_monai_label():
        return str(p)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))
    raise BundleConfigError(
        f"s4mi: {p} already holds a model (written {when}) and this new run would replace it. To keep it, give "
        f"the run its own folder (--output_dir <folder>: weights go to <folder>/models) or --ckpt_dir <folder>; "
        f"to replace it, pass --overwrite_model True (or move the file away)."
    )
