"""Write pseudo labels back into a MONAI Label datastore, for annotators to review."""

from __future__ import annotations

import os
import time
from typing import Any

from .overrides import FINAL_TAG, PSEUDO_TAG

__all__ = ["save_pseudo_label"]


def save_pseudo_label(
    datastore: Any,
    image_id: str,
    label_path: str | os.PathLike,
    tag: str = PSEUDO_TAG,
    info: dict[str, Any] | None = None,
    skip_if_final: bool = False,
) -> str | None:
    """Save ``label_path`` as the ``tag`` label of ``image_id`` (default ``pseudo``) and return the label id.

    The datastore keeps one label per image and tag (``labels/<tag>/`` in a local datastore), so a pseudo label is
    stored beside, never over, an annotator's ``final`` label; clients load it with ``GET
    /datastore/label?label=<id>&tag=pseudo``. Its info holds ``"pseudo": True`` and ``"source": "s4mi"``.

    Args:
        datastore: a MONAI Label ``Datastore`` (``app.datastore()``).
        image_id: the image's id in the datastore.
        label_path: the label file (e.g. the ``file`` of an ``/infer`` answer).
        tag: the label tag; ``final`` is refused.
        info: more label info (model name, scores...).
        skip_if_final: do nothing (return None) when the image already has a ``final`` label.

    Raises:
        ValueError: ``tag`` is the annotators' ``final`` tag.
        FileNotFoundError: ``label_path`` does not exist.
    """
    if not tag or tag.strip().lower() == FINAL_TAG:
        raise ValueError(f"s4mi never writes a pseudo label with the annotators' tag {FINAL_TAG!r}; use {PSEUDO_TAG!r}")
    if not os.path.isfile(label_path):
        raise FileNotFoundError(f"pseudo label file {label_path} not found")
    if skip_if_final and FINAL_TAG in (datastore.get_labels_by_image_id(image_id) or {}):
        return None
    label_info = {"pseudo": True, "source": "s4mi", "created": int(time.time()), **(info or {})}
    return datastore.save_label(image_id, str(label_path), tag, label_info)
