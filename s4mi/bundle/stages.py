"""Checks between the stages of a two-stage bundle (``configs/pretrain.json``, then ``configs/train.json``)."""

from __future__ import annotations

import os
from pathlib import Path

from .overrides import BundleConfigError

__all__ = ["require_first_stage"]


def require_first_stage(
    path: str | os.PathLike,
    resume_ckpt: str | os.PathLike = "",
    bundle: str = "the bundle",
    key: str = "pretrained_ckpt",
) -> Path | None:
    """Stop a second stage, before it builds anything, when the first stage's weights are not there.

    Called first in the ``run`` list of a two-stage bundle's ``train.json``. The loaders it guards
    (:func:`s4mi.handlers.load_pretrained_backbone`, :func:`s4mi.handlers.load_teacher`) raise a
    ``FileNotFoundError`` that MONAI would bury under "Failed to evaluate ConfigExpression"; this raises
    :class:`~s4mi.bundle.BundleConfigError`, so the user's last line says what to run.

    Args:
        path: the first stage's output (``pretrained_ckpt``); empty means "train without it" and passes.
        resume_ckpt: the run's resume checkpoint; a resumed run holds its weights already and passes.
        bundle: the bundle's name, for the message.
        key: the config key of ``path``, for the message.

    Returns:
        the path when it is needed and there, else None.

    Raises:
        BundleConfigError: ``path`` is needed and missing.
    """
    if resume_ckpt or not str(path):
        return None
    p = Path(path)
    if p.is_file():
        return p
    raise BundleConfigError(
        f"s4mi: configs/train.json of {bundle} starts from its first stage's weights, but {key} = {str(p)!r} does "
        f"not exist. Run configs/pretrain.json first with the same --output_dir/--ckpt_dir (or `s4mi run {bundle}`, "
        f"which runs both stages), point --{key} at that stage's file, or pass --{key} '' to train without it."
    )
