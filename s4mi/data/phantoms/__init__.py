"""Seeded generators of realistic synthetic medical-imaging datasets (the embedded default data of s4mi).

No labelled medical dataset can be downloaded in the environments s4mi targets, so every bundle trains on phantoms
written to disk in the formats real data comes in (PNG, DICOM, NIfTI) together with a MONAI-style ``datalist.json``.

Five phantoms are available:

* ``"cxr"``: chest radiographs (8-bit grayscale PNG or DICOM), six multi-label findings and a lung mask.
* ``"skin"``: dermoscopy photographs (RGB PNG), the seven ISIC 2018 task 3 classes and a lesion mask.
* ``"skin_seg"``: the same photographs and split as ``"skin"``, as a lesion segmentation datalist (ISIC 2017 task 1:
  each item's ``label`` is its lesion mask).
* ``"polyp"``: colonoscopy frames (RGB PNG) with a binary polyp mask.
* ``"ct3d"``: abdominal CT volumes in Hounsfield units (NIfTI) with a multi-class organ label map.

Findings are subtle on purpose (small, low-contrast, overlapping anatomy, noise, exposure variation) so that label
efficiency matters: a supervised CNN trained on 10% of the labels is clearly worse than one trained on all of them.

Every image is drawn from its own generator seeded by ``(seed, index, phantom)``, so image ``i`` does not depend on
``n`` and the same arguments always produce byte-identical files.

Example:
    >>> from s4mi.data.phantoms import make_phantom
    >>> datalist = make_phantom("cxr", "/tmp/cxr", n=200, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import _name_code, _write_atomic
from .ct import CT3D_CLASSES, CT3D_SPACING, _write_ct3d, generate_ct3d, nifti_affine
from .cxr import CXR_CLASSES, CXR_PREVALENCE, _write_cxr, generate_cxr
from .polyp import POLYP_CLASSES, _write_polyp, generate_polyp
from .skin import SKIN_CLASSES, SKIN_PRIORS, _skin_schedule, _write_skin, generate_skin

__all__ = [
    "CT3D_CLASSES",
    "CT3D_SPACING",
    "CXR_CLASSES",
    "CXR_PREVALENCE",
    "PHANTOMS",
    "POLYP_CLASSES",
    "SKIN_CLASSES",
    "SKIN_PRIORS",
    "generate_ct3d",
    "generate_cxr",
    "generate_polyp",
    "generate_skin",
    "make_phantom",
    "nifti_affine",
]

PHANTOMS: tuple[str, ...] = ("cxr", "skin", "skin_seg", "polyp", "ct3d")
DEFAULT_SIZES: dict[str, int] = {"cxr": 128, "skin": 128, "skin_seg": 128, "polyp": 128, "ct3d": 64}


def _allocate(m: int, fractions: Sequence[float], at_least_one: bool) -> list[int]:
    """Largest-remainder allocation of ``m`` items to parts; optionally one item per non-empty part first."""
    k = len(fractions)
    counts = [0] * k
    active = [i for i in range(k) if fractions[i] > 0]
    if at_least_one and m >= len(active):
        for i in active:
            counts[i] = 1
    rest = m - sum(counts)
    raw = [rest * f for f in fractions]
    extra = [int(math.floor(r)) for r in raw]
    rem = rest - sum(extra)
    order = sorted(range(k), key=lambda i: (-(raw[i] - extra[i]), i))
    for i in order[:rem]:
        extra[i] += 1
    return [c + e for c, e in zip(counts, extra)]


def _split(
    n: int, strata: Sequence[int] | None, fractions: Sequence[float], rng: np.random.Generator
) -> list[list[int]]:
    """Deterministic (optionally stratified) assignment of indices ``0..n-1`` to the parts, each part sorted."""
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(0 if strata is None else int(strata[i]), []).append(i)
    parts: list[list[int]] = [[] for _ in fractions]
    for key in sorted(groups):
        members = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        counts = _allocate(len(members), fractions, at_least_one=strata is not None)
        start = 0
        for p, cnt in enumerate(counts):
            parts[p].extend(members[start : start + cnt])
            start += cnt
    return [sorted(p) for p in parts]


_META: dict[str, dict[str, Any]] = {
    "cxr": {
        "description": "Synthetic frontal chest radiographs with six subtle multi-label findings and lung masks.",
        "task": "multilabel",
        "modality": "DX",
        "classes": list(CXR_CLASSES),
    },
    "skin": {
        "description": "Synthetic dermoscopy images, ISIC 2018 task 3 classes and class imbalance, lesion masks.",
        "task": "multiclass",
        "modality": "XC",
        "classes": list(SKIN_CLASSES),
    },
    "skin_seg": {
        "description": "Synthetic dermoscopy images with binary lesion segmentation masks (the skin phantom's images).",
        "task": "segmentation",
        "modality": "XC",
        "classes": ["background", "lesion"],
    },
    "polyp": {
        "description": "Synthetic colonoscopy frames with binary polyp segmentation masks.",
        "task": "segmentation",
        "modality": "ES",
        "classes": list(POLYP_CLASSES),
    },
    "ct3d": {
        "description": "Synthetic abdominal CT volumes (HU) with liver, spleen and kidney labels.",
        "task": "segmentation",
        "modality": "CT",
        "classes": list(CT3D_CLASSES),
    },
}


def _as_segmentation(written: tuple[dict[str, Any], int]) -> tuple[dict[str, Any], int]:
    """A skin item as a segmentation item: its mask becomes its label (the class stays the split's stratum)."""
    item, cls = written
    return {"image": item["image"], "label": item["mask"]}, cls


def make_phantom(
    name: str,
    out_dir: str | Path,
    n: int = 1000,
    seed: int = 0,
    image_size: int | None = None,
    dicom: bool = False,
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write n images (+ labels/masks) under out_dir and out_dir/datalist.json; return the datalist path.

    Layout (paths in the datalist are relative to ``out_dir``, POSIX style):

    * cxr: ``images/cxr_00000.png`` (or ``.dcm`` with ``dicom=True``), ``masks/cxr_00000.png`` (lung, 0/1);
      items ``{"image", "label": multi-hot list, "mask"}``.
    * skin: ``images/skin_00000.png`` (RGB), ``masks/skin_00000.png`` (lesion, 0/1);
      items ``{"image", "label": one-hot list, "mask"}``.
    * skin_seg: the skin phantom's files and split (byte-identical: same generator seeds); items
      ``{"image", "label": mask}``.
    * polyp: ``images/polyp_00000.png`` (RGB), ``masks/polyp_00000.png`` (0/1); items ``{"image", "label": mask}``.
    * ct3d: ``images/ct3d_00000.nii.gz`` (int16 HU), ``labels/ct3d_00000.nii.gz`` (uint8 0..4);
      items ``{"image", "label"}``.

    Masks are stored as label values (0/1), not scaled to 255. The same arguments give byte-identical files.

    Args:
        name: one of ``PHANTOMS``.
        out_dir: output directory (created if needed; existing files with the same names are overwritten).
        n: number of images.
        seed: non-negative dataset seed; image ``i`` is drawn from ``np.random.default_rng([seed, i, code(name)])``.
        image_size: edge length in pixels/voxels; defaults to 128 (2D) or 64 (ct3d).
        dicom: write the cxr images as DICOM (DX, MONOCHROME2, 8-bit) instead of PNG; only valid for ``"cxr"``.
        splits: fractions of (training, validation, test); the skin (and skin_seg) split is stratified by class.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: unknown ``name``, ``dicom`` for a non-cxr phantom, or invalid ``n``, ``seed``, ``size``, ``splits``.
    """
    if name not in PHANTOMS:
        raise ValueError(f"unknown phantom {name!r}; valid names: {', '.join(PHANTOMS)}")
    if dicom and name != "cxr":
        raise ValueError(f"dicom=True is only supported for the 'cxr' phantom, not {name!r}")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    size = DEFAULT_SIZES[name] if image_size is None else int(image_size)
    if size < 16:
        raise ValueError(f"image_size must be >= 16, got {size}")
    fr = [float(f) for f in splits]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"splits must be three non-negative fractions summing to 1, got {splits}")
    n, seed = int(n), int(seed)

    root = Path(out_dir)
    for sub in ("images", "labels" if name == "ct3d" else "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    skin = name in ("skin", "skin_seg")
    code = _name_code("skin" if skin else name)
    schedule = _skin_schedule(n, seed) if skin else None
    writer: Callable[[int, np.random.Generator], tuple[dict[str, Any], int]] = {
        "cxr": lambda i, rng: _write_cxr(root, i, rng, size, seed, dicom),
        "skin": lambda i, rng: _write_skin(root, i, rng, size, schedule[i] if schedule else None),
        "skin_seg": lambda i, rng: _as_segmentation(_write_skin(root, i, rng, size, schedule[i] if schedule else None)),
        "polyp": lambda i, rng: _write_polyp(root, i, rng, size),
        "ct3d": lambda i, rng: _write_ct3d(root, i, rng, size),
    }[name]
    items: list[dict[str, Any]] = []
    strata: list[int] = []
    for i in range(n):
        item, stratum = writer(i, np.random.default_rng([seed, i, code]))
        items.append(item)
        strata.append(stratum)

    parts = _split(n, strata if skin else None, fr, np.random.default_rng([seed, code, 2]))
    datalist: dict[str, Any] = {"name": f"s4mi-phantom-{name}", **_META[name], "seed": seed}
    for key, part in zip(("training", "validation", "test"), parts):
        datalist[key] = [items[i] for i in part]
    path = root / "datalist.json"
    _write_atomic(path, (json.dumps(datalist, indent=4) + "\n").encode())
    return path
