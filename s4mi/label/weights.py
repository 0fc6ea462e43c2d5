"""A bundle's weights as MONAI Label looks for them (no monailabel import: testable anywhere)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["WEIGHT_FILES", "missing_weights", "no_weights_message"]

#: what MONAI Label 0.8.5's BundleInferTask infers with, in its order: ``models/model.pt``, else ``models/model.ts``
WEIGHT_FILES = ("model.pt", "model.ts")


def missing_weights(bundle: str | os.PathLike) -> Path | None:
    """``<bundle>/models/model.pt`` when the bundle has neither it nor ``models/model.ts``, else ``None``.

    MONAI Label's ``BundleInferTask`` ignores such a bundle (one log line) and its ``/infer`` has no model to run.
    """
    models = Path(bundle) / "models"
    if any((models / f).is_file() for f in WEIGHT_FILES):
        return None
    return models / WEIGHT_FILES[0]


def no_weights_message(name: str, bundle: str | os.PathLike) -> str:
    """What to tell a user whose bundle ``name`` (folder ``bundle``) has no weights, and how to give it some."""
    from s4mi.bundle.stages import bundle_stages

    weights = Path(bundle) / "models" / WEIGHT_FILES[0]
    text = (
        f"s4mi: model {name!r} has no weights: {weights} not found (nor models/{WEIGHT_FILES[1]}). Train it with "
        f"POST /train/{name} (it writes that file, and the next /infer/{name} uses it without a server restart), or "
        "copy a trained model.pt there (a bundle's training writes <ckpt_dir>/model.pt)"
    )
    try:
        two_stage = len(bundle_stages(bundle)) > 1
    except (FileNotFoundError, RuntimeError):
        two_stage = False
    if two_stage:
        text += (
            f". {name} has two stages and MONAI Label runs configs/train.json only: without a model.pt, /train needs "
            f"the first stage's {Path(bundle) / 'models' / 'pretrained.pt'} (`s4mi run {bundle} --stages pretrain --bundle_root {bundle} --datalist <datalist>`)"
        )
    return text
