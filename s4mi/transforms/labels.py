"""Classification labels stored as files: how MONAI Label's datastore and annotators hand them over."""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform

__all__ = ["LoadClassLabeld", "write_class_label"]


def write_class_label(vector: Any, path: str | os.PathLike) -> Path:
    """Write a multi-hot (or one-hot) class vector as a one-row 8-bit PNG, one pixel per class (0 or 1).

    This is the file form of a classification label that MONAI Label's datastore accepts (it only keeps label
    files of image types, named like their image under ``labels/final``); :class:`LoadClassLabeld` reads it back.

    Args:
        vector: ``C`` values in {0, 1}.
        path: the ``.png`` file to write (its folder is made).

    Returns:
        the path written.

    Raises:
        ValueError: the vector is empty, not 1-D, or holds values other than 0 and 1.
    """
    from PIL import Image

    v = np.asarray(vector)
    if v.ndim != 1 or v.size == 0 or not np.isin(v, (0, 1)).all():
        raise ValueError(f"a class label must be a non-empty 1-D vector of 0/1, got {v.tolist()}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(v.astype(np.uint8)[None, :], mode="L").save(path)
    return path


class LoadClassLabeld(MapTransform):
    """Read a classification label given as a file into its class vector; leave vectors as they are.

    Datalists hold classification labels as lists (``[0, 1, 0, ...]``). MONAI Label, like any tool built on image
    datastores, hands a label over as a file path instead: this reads ``.json`` files (a list, or ``{"label":
    list}``) and image files (a one-row image, one pixel per class, as :func:`write_class_label` writes; any image
    whose first ``num_classes`` values in row-major order are the vector) and returns a float vector of
    ``num_classes`` values. Vectors, arrays and tensors pass through.

    Args:
        keys: label keys.
        num_classes: number of classes ``C``.
        allow_missing_keys: don't raise if a key is missing (unlabelled items have no label).

    Raises:
        ValueError: a label file holds fewer than ``num_classes`` values or values other than 0/1 (names the file).
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = int(num_classes)
        self._reader = LoadImage(image_only=True)

    def _read(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".json":
            value = json.loads(path.read_text())
            value = value.get("label") if isinstance(value, dict) else value
            values = np.asarray(value, dtype=np.float32).reshape(-1)
        else:
            # MONAI's readers put the first image axis last for PNG (W H): transpose back to row-major order
            img = np.asarray(self._reader(str(path)))
            values = (img.T if img.ndim == 2 else img).reshape(-1).astype(np.float32)
        if values.size < self.num_classes:
            raise ValueError(f"label file {path} holds {values.size} values, expected {self.num_classes} classes")
        values = values[: self.num_classes]
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"label file {path}: class values must be 0 or 1, got {values.tolist()}")
        return values

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, (str, os.PathLike)):
                d[key] = self._read(Path(value))
        return d
