"""Checks of a resolved datalist against the bundle that trains on it, before any training: images, labels, leakage.

:func:`~s4mi.data.datalist.validate_datalist` checks a datalist's form. What it cannot know is what a bundle needs
(its channels, 2D or 3D, its classes, an unlabelled pool) and what the files hold (a corrupt PNG, a NaN volume, a
mask of another geometry, the same image in training and test): without these checks such data fails inside
MONAI's loaders or, worse, trains. :func:`check_data` runs them all; bundles call it on the data they train on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .datalist import SECTIONS, DatalistError

__all__ = ["DataCheckError", "LeakageError", "check_data", "check_images", "find_leakage", "item_paths"]

logger = logging.getLogger(__name__)


class DataCheckError(ValueError):
    """The data does not fit the bundle, or an image cannot be used; the message names the item and the file."""


class LeakageError(DataCheckError):
    """The same image (or patient) is in two sections that must be disjoint."""


def item_paths(item: Mapping[str, Any], key: str = "image") -> tuple[str, ...]:
    value = item.get(key)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


def _where(section: str, index: int, path: Any) -> str:
    return f"section '{section}' item {index} ({path})"


def _read(path: Any, where: str) -> Any:
    """An image as MONAI's loader reads it for the bundles (channel first), or a :class:`DataCheckError`."""
    from monai.transforms import LoadImage

    from .readers import DicomSeriesReader

    loader = LoadImage(image_only=True, ensure_channel_first=True)
    loader.register(DicomSeriesReader())
    try:
        return loader(path)
    except Exception as e:  # every reader's own error; MONAI wraps them
        cause = e.__cause__ or e
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[-1][:300]
        raise DataCheckError(
            f"{where}: the file cannot be read as an image (corrupt, truncated or not an image): "
            f"{type(cause).__name__}: {reason}"
        ) from e


def check_images(
    data: Mapping[str, Any],
    in_channels: int | None = None,
    spatial_dims: int | None = None,
    sections: Sequence[str] = SECTIONS,
) -> None:
    """Read every image (and segmentation mask) and check what training would otherwise trip over.

    Checks: the file reads; the image has ``in_channels`` channels and ``spatial_dims`` spatial axes (a 3D volume
    given to a 2D bundle and the reverse); its values are finite and not all equal (a blank or NaN image gives a
    NaN loss after intensity scaling); a mask path has the image's spatial shape and, when both carry one, its
    affine (geometry).

    Raises:
        DataCheckError: naming the section, item, file and the fault.
    """
    for section in sections:
        for index, item in enumerate(data.get(section) or []):
            paths = item_paths(item)
            path: Any = paths[0] if len(paths) == 1 else list(paths)
            where = _where(section, index, path)
            image = _read(path, where)
            shape = tuple(image.shape)
            if spatial_dims is not None and len(shape) - 1 != spatial_dims:
                kind = {2: "2D", 3: "3D"}
                raise DataCheckError(
                    f"{where}: a {kind.get(len(shape) - 1, f'{len(shape) - 1}-D')} image (shape {shape}, channel "
                    f"first) but the bundle is {kind.get(spatial_dims, str(spatial_dims))} (spatial_size has "
                    f"{spatial_dims} entries)"
                )
            if in_channels is not None and shape[0] != in_channels:
                raise DataCheckError(
                    f"{where}: the image has {shape[0]} channel(s) (shape {shape}) but the bundle's network takes "
                    f"in_channels {in_channels}"
                )
            values = np.asarray(image)
            if not np.isfinite(values).all():
                raise DataCheckError(f"{where}: the image holds NaN or infinite values")
            if values.size and values.min() == values.max():
                raise DataCheckError(
                    f"{where}: the image is constant (every value {values.flat[0]!r}): a blank image has no content "
                    "to learn from and its intensity scaling divides by zero; remove it from the datalist"
                )
            for key in ("label", "mask", "seg"):
                mask_path = item.get(key)
                if not isinstance(mask_path, str):
                    continue
                mask = _read(mask_path, f"{where} {key} {mask_path}")
                if tuple(mask.shape[1:]) != shape[1:]:
                    raise DataCheckError(
                        f"{where}: {key} {mask_path} has spatial shape {tuple(mask.shape[1:])}, the image {shape[1:]}"
                    )
                a, b = getattr(image, "affine", None), getattr(mask, "affine", None)
                if a is not None and b is not None and not np.allclose(np.asarray(a), np.asarray(b), atol=1e-3):
                    raise DataCheckError(
                        f"{where}: {key} {mask_path} has another geometry (affine) than the image: "
                        f"{np.asarray(b).round(3).tolist()} vs {np.asarray(a).round(3).tolist()}"
                    )


def _content_hash(paths: Iterable[str]) -> str | None:
    digest = hashlib.sha256()
    try:
        for p in paths:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def find_leakage(data: Mapping[str, Any], by_content: bool = True) -> list[str]:
    """Items shared between sections that must be disjoint, one line each.

    Reports: the same image path in two sections; the same file content (SHA-256 of the bytes) under two paths in
    two sections (a copy); and, where items carry a ``"patient"`` (the CXR14 and CheXpert adapters write it), a
    patient with images in two of training/unlabelled, validation and test. ``training`` and ``unlabeled`` may share
    patients (they are both the training pool), not images.

    Args:
        data: a resolved datalist.
        by_content: also hash every file (reads every byte once).

    Returns:
        the problems found, empty when none.
    """
    problems: list[str] = []
    seen_path: dict[str, tuple[str, int]] = {}
    seen_hash: dict[str, tuple[str, int, str]] = {}
    for section in SECTIONS:
        for index, item in enumerate(data.get(section) or []):
            paths = item_paths(item)
            key = "|".join(str(Path(p).resolve()) for p in paths)
            first = seen_path.get(key)
            if first is not None and first[0] != section:
                problems.append(
                    f"{section} item {index} and {first[0]} item {first[1]} are the same image {'|'.join(paths)}"
                )
                continue
            seen_path.setdefault(key, (section, index))
            if by_content and paths:
                digest = _content_hash(paths)
                if digest is None:
                    continue
                other = seen_hash.get(digest)
                if other is not None and other[0] != section:
                    problems.append(
                        f"{section} item {index} ({'|'.join(paths)}) has the same content as {other[0]} item "
                        f"{other[1]} ({other[2]})"
                    )
                seen_hash.setdefault(digest, (section, index, "|".join(paths)))
    pools = {"training": "training pool", "unlabeled": "training pool", "validation": "validation", "test": "test"}
    patients: dict[str, dict[str, str]] = {}
    for section in SECTIONS:
        for index, item in enumerate(data.get(section) or []):
            patient = item.get("patient")
            if patient is None:
                continue
            patients.setdefault(str(patient), {}).setdefault(pools[section], f"{section} item {index}")
    for patient, where in patients.items():
        if len(where) > 1:
            problems.append(f"patient {patient} has images in {' and '.join(f'{k} ({v})' for k, v in where.items())}")
    return problems


def check_data(
    data: dict[str, Any],
    in_channels: int | None = None,
    spatial_dims: int | None = None,
    num_classes: int | None = None,
    needs_unlabeled: bool = False,
    allow_leakage: bool = False,
    read_images: bool = True,
) -> dict[str, Any]:
    """Check the data a bundle trains on, before training; return it unchanged.

    Args:
        data: the resolved datalist (:func:`~s4mi.data.prepare.prepare_datalist`).
        in_channels: the network's input channels.
        spatial_dims: 2 or 3 (the length of the bundle's ``spatial_size``).
        num_classes: the network's outputs: a classification label vector must have this length.
        needs_unlabeled: a semi-supervised bundle: the unlabelled set must not be empty.
        allow_leakage: train even when validation or test images are in the training or unlabelled pool.
        read_images: read every image (:func:`check_images`); False checks the datalist only.

    Raises:
        DataCheckError: an empty labelled or unlabelled set, a label vector of the wrong length, or an image fault.
        LeakageError: validation or test images shared with training or unlabelled items (unless allowed).
    """
    from s4mi.bundle import as_bool

    if not data.get("training"):
        raise DataCheckError("the labelled set ('training') is empty: training needs at least one labelled item")
    if as_bool(needs_unlabeled) and not data.get("unlabeled"):
        raise DataCheckError(
            "the unlabelled set ('unlabeled') is empty but this bundle is semi-supervised: give unlabelled images, "
            "or a label_fraction below 1 to move part of 'training' there"
        )
    if num_classes is not None:
        for section in ("training", "validation", "test"):
            for index, item in enumerate(data.get(section) or []):
                label = item.get("label")
                if isinstance(label, list) and len(label) != int(num_classes):
                    raise DatalistError(
                        f"a label vector of length {len(label)}, but the bundle has num_classes {num_classes}",
                        section=section,
                        index=index,
                        key="label",
                    )
    if not as_bool(allow_leakage):
        pools = {"training": data.get("training") or [], "unlabeled": data.get("unlabeled") or []}
        held_out = {s: data.get(s) or [] for s in ("validation", "test")}
        problems = [
            p
            for pool, pool_items in pools.items()
            for s, items in held_out.items()
            for p in find_leakage({pool: pool_items, s: items})
        ]
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise LeakageError(
                f"validation or test images are in the training pool: {shown}. Evaluating on them would overstate the "
                "model; fix the datalist (`s4mi data check` lists every case) or pass --allow_leakage True"
            )
    if as_bool(read_images):
        check_images(data, in_channels, spatial_dims)
    return data
