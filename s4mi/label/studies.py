"""A MONAI Label studies folder from a datalist (a phantom's, or your own); no monailabel import."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .overrides import FINAL_TAG

__all__ = ["image_id", "studies_from_datalist"]

#: double extensions MONAI Label's local datastore strips whole from a file name to make its id
_DOUBLE = (".nii.gz", ".seg.nrrd")


def image_id(path: str | os.PathLike) -> tuple[str, str]:
    """(id, extension) of an image file as MONAI Label's local datastore names it: ``ct_001.nii.gz`` -> ``ct_001``."""
    name = Path(path).name
    for ext in _DOUBLE:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    stem, ext = os.path.splitext(name)
    return stem, ext


def studies_from_datalist(
    datalist: str | os.PathLike,
    studies: str | os.PathLike,
    labelled: int | None = None,
    sections: Sequence[str] = ("training", "unlabeled", "validation", "test"),
) -> dict[str, int]:
    """Lay out a MONAI Label studies folder: every image of ``sections``, and labels under ``labels/final``.

    MONAI Label's local datastore reads images from the top of the studies folder and the annotators' labels from
    ``labels/final/``, each named like its image (the id is the file name without its extension). An item's label is
    copied there when it is a file (a segmentation mask or label volume, keeping its extension); a class vector (the
    classification phantoms' and datalists' ``label``) is written as the one-row PNG of
    :func:`s4mi.transforms.write_class_label`. Only the first ``labelled`` images get their label, so the rest are
    the datastore's unlabelled images (what the s4mi app feeds a semi-supervised bundle's unlabelled stream).

    Args:
        datalist: a datalist file; its relative paths are relative to its folder (as ``s4mi data make`` writes them).
        studies: the studies folder to fill (made if needed).
        labelled: how many images get a ``final`` label, in datalist order; ``None``: every one that has a label.
        sections: datalist sections to take images from, in order. ``unlabeled`` (a split datalist's, e.g. from
            ``s4mi split``) comes in without labels: its images are the datastore's unlabelled images.

    Returns:
        ``{"images": n, "labelled": k}``.

    Raises:
        ValueError: two images would get the same id, or an item has no ``image``.
        FileNotFoundError: an image or label file does not exist.
    """
    from s4mi.transforms import write_class_label

    source = Path(datalist)
    data: dict[str, Any] = json.loads(source.read_text())
    out = Path(studies)
    final = out / "labels" / FINAL_TAG
    final.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    n_labelled = 0
    for section in sections:
        for i, item in enumerate(data.get(section) or []):
            if "image" not in item:
                raise ValueError(f"{source}: {section}[{i}] has no 'image'")
            image = source.parent / item["image"]
            if not image.is_file():
                raise FileNotFoundError(f"{source}: {section}[{i}] image {image} not found")
            ident, ext = image_id(image)
            if ident in seen:
                raise ValueError(f"{source}: {image} and {seen[ident]} would both be image {ident!r} in the datastore")
            seen[ident] = str(image)
            shutil.copy(image, out / f"{ident}{ext}")
            label = item.get("label")
            if label is None or (labelled is not None and n_labelled >= labelled):
                continue
            if isinstance(label, str):
                label_file = source.parent / label
                if not label_file.is_file():
                    raise FileNotFoundError(f"{source}: {section}[{i}] label {label_file} not found")
                shutil.copy(label_file, final / f"{ident}{image_id(label_file)[1]}")
            else:
                write_class_label(label, final / f"{ident}.png")
            n_labelled += 1
    return {"images": len(seen), "labelled": n_labelled}
