"""Where a training run writes its weights, and the guard that keeps it from replacing a model silently."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .overrides import BundleConfigError, _argv_overrides

__all__ = ["protect_model", "run_ckpt_dir"]


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
