"""The bundle overrides s4mi adds to MONAI Label's training (no monailabel import: testable anywhere)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FINAL_TAG", "PSEUDO_TAG", "UNLABELED_KEY", "is_semi_supervised", "s4mi_overrides"]

FINAL_TAG = "final"  # MONAI Label's DefaultLabelTag.FINAL: the annotators' labels, what training reads
PSEUDO_TAG = "pseudo"  # labels s4mi writes back for review
UNLABELED_KEY = "train#unlabeled_dataset#data"


def _get(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def is_semi_supervised(config: Mapping[str, Any]) -> bool:
    """True for a bundle whose training draws an unlabelled stream (``train#unlabeled_dataset``).

    s4mi's semi-supervised bundles train with a :class:`s4mi.engines.SemiSupervisedTrainer` fed by a
    :class:`s4mi.data.loaders.SemiSupervisedLoader` over ``train#dataset`` and ``train#unlabeled_dataset``.
    """
    if _get(config, "train#unlabeled_dataset") is not None:
        return True
    loader = str(_get(config, "train#loader#_target_") or "")
    return loader.endswith("SemiSupervisedLoader")


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
    * ``pretrained_ckpt`` = ``""`` for a two-stage bundle (S2MTS2) that has a ``models/model.pt``: training starts
      from that model, which already holds the fine-tuned backbone, so the pretraining stage's weights are not needed.
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
    if "pretrained_ckpt" in config and os.path.isfile(os.path.join(str(bundle_path), "models", "model.pt")):
        out["pretrained_ckpt"] = ""
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
