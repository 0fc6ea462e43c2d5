"""The bundle overrides s4mi adds to MONAI Label's training (no monailabel import: testable anywhere)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from s4mi.bundle.stages import is_semi_supervised, model_start_overrides

__all__ = ["FINAL_TAG", "PSEUDO_TAG", "UNLABELED_KEY", "is_semi_supervised", "s4mi_overrides"]

FINAL_TAG = "final"  # MONAI Label's DefaultLabelTag.FINAL: the annotators' labels, what training reads
PSEUDO_TAG = "pseudo"  # labels s4mi writes back for review
UNLABELED_KEY = "train#unlabeled_dataset#data"


def s4mi_overrides(
    config: Mapping[str, Any],
    bundle_path: str | os.PathLike,
    overrides: Mapping[str, Any],
    unlabeled: Sequence[Mapping[str, Any]] | None = None,
    unlabeled_batch_size: int | None = None,
) -> dict[str, Any]:
    """Overrides that s4mi adds to those of MONAI Label's ``BundleTrainTask`` (returned, not applied).

    * ``max_epochs``: the requested epochs (MONAI Label sets only ``train#trainer#max_epochs``; the learning-rate
      schedule and ramps of s4mi bundles read ``max_epochs``).
    * ``device`` as a ``torch.device`` (MONAI Label passes a string).
    * ``output_dir`` = ``<bundle>/runs/monailabel`` and ``resume_ckpt`` = ``""``: every MONAI Label training starts
      from ``models/model.pt`` (MONAI Label's own ``CheckpointLoader``) with the datastore's current labels, instead
      of resuming an earlier run's checkpoint, which was taken on other data and may have finished already.
    * ``ckpt_dir`` = ``<bundle>/models`` and ``overwrite_model``: the new model replaces ``models/model.pt``, which
      MONAI Label's inference reads (a run with another ``output_dir`` would otherwise write ``<output_dir>/models``).
    * ``progress_bar`` off (the server log keeps every line).
    * ``pretrained_ckpt`` = ``""`` for a two-stage bundle that has a ``models/model.pt``
      (:func:`s4mi.bundle.stages.model_start_overrides`): MONAI Label runs ``train.json`` only, from that model,
      which already holds what the first stage made, so the first stage's weights are not needed.
    * semi-supervised or not is :func:`s4mi.bundle.stages.is_semi_supervised`, the test ``s4mi benchmark`` uses.
    * for a semi-supervised bundle, ``train#unlabeled_dataset#data`` = the datastore's unlabelled images, and
      ``unlabeled_batch_size`` no larger than their number (the unlabelled loader drops its last partial batch).

    Raises:
        ValueError: a semi-supervised bundle and no unlabelled image.
    """
    import torch

    out: dict[str, Any] = {
        "output_dir": os.path.join(str(bundle_path), "runs", "monailabel"),
        "ckpt_dir": os.path.join(str(bundle_path), "models"),
        "overwrite_model": True,
        "resume_ckpt": "",
        "progress_bar": False,
    }
    out.update(model_start_overrides(config, bundle_path))  # MONAI Label runs the last stage only
    if "train#trainer#max_epochs" in overrides:
        out["max_epochs"] = int(overrides["train#trainer#max_epochs"])
    if overrides.get("device") is not None:
        out["device"] = torch.device(overrides["device"])
    if is_semi_supervised(config):
        items = [{"image": str(u["image"])} for u in (unlabeled or [])]
        if not items:
            raise ValueError(
                "s4mi: this bundle is semi-supervised and the datastore has no unlabelled image (every image has a "
                "'final' label); add images without labels, or train a supervised bundle"
            )
        out[UNLABELED_KEY] = items
        if unlabeled_batch_size is not None and unlabeled_batch_size > len(items):
            out["unlabeled_batch_size"] = len(items)
    return out
