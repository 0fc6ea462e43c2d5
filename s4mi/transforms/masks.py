"""Dictionary transforms that make label masks from any source look alike, or refuse them by name."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["BinarizeMaskd", "SegmentationLabeld", "mask_source", "png_scale"]


def mask_source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    """The file a loaded mask came from, for error messages.

    Reads MONAI's ``meta["filename_or_obj"]`` of a MetaTensor, else the ``<key>_meta_dict`` that ``LoadImaged``
    writes with ``image_only=False``, else the item's value when it is still a path.
    """
    value = data[key]
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if name:
        return str(name)
    if isinstance(value, str):
        return value
    return f"the item's {key!r} (no file name in its metadata)"


def _values(mask: torch.Tensor | np.ndarray, most: int = 8) -> str:
    found = torch.unique(torch.as_tensor(mask)).tolist()
    shown = ", ".join(f"{v:g}" for v in found[:most])
    return f"{{{shown}}}" if len(found) <= most else f"{{{shown}, ...}} ({len(found)} distinct values)"


def _first_channel(mask: Any, key: Hashable, who: str) -> Any:
    if mask.ndim < 3:
        raise ValueError(f"{who}: {key!r} must be channel-first C H W[ D], got shape {tuple(mask.shape)}")
    return mask[:1]


def _binarize(mask: Any, key: Hashable, source: str, threshold: float, num_classes: int = 2) -> Any:
    """``1 H W[ D]`` mask in {0, 1}; refuses a mask that thresholding would leave all background."""
    top = float(mask.max())
    if 1 < top <= threshold:
        hint = f"; a mask of class indices 0..{top:g} needs num_classes {top + 1:g}" if top == int(top) else ""
        raise ValueError(
            f"{source}: mask {key!r} has values {_values(mask)}, which do not fit num_classes {num_classes} "
            f"(a binary mask is 0/1, or 0..255 thresholded at {threshold:g}, and thresholding this one would "
            f"leave it all background){hint}"
        )
    cut = threshold if top > 1 else 0.5
    return (mask > cut).to(torch.float32) if isinstance(mask, torch.Tensor) else (mask > cut).astype("float32")


class BinarizeMaskd(MapTransform):
    """Turn a loaded binary mask into a single-channel {0, 1} label.

    Public polyp datasets store masks as RGB JPEG in 0..255 with compression noise (Kvasir-SEG), or as
    single-channel PNG in 0..255 or 0..1. This keeps the first channel (``C H W`` -> ``1 H W``) and, when the
    mask is not already in {0, 1}, thresholds it at half its range (``threshold`` on a 0..255 scale). A mask
    whose values exceed 1 but stay at or below ``threshold`` (class indices such as {0, 1, 2, 3}) would become
    all background: it is refused with an error naming its file and values. For masks that may be multi-class
    use :class:`SegmentationLabeld`.

    Args:
        keys: keys of the masks, each ``C H W[ D]`` channel-first.
        threshold: threshold on the 0..255 scale, used when the maximum value is above 1.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: a mask that is not channel-first, or one that thresholding would leave all background.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 127.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = _first_channel(d[key], key, "BinarizeMaskd")
            d[key] = _binarize(mask, key, mask_source(d, key), self.threshold)
        return d


class SegmentationLabeld(MapTransform):
    """A loaded segmentation mask as a single-channel label of class indices that fit ``num_classes``.

    * ``num_classes`` 1 or 2 (binary: one sigmoid channel, or background + foreground): the mask is binarised
      as :class:`BinarizeMaskd` does (first channel; 0/1 kept, 0..255 masks such as PNG 0/255 or Kvasir-SEG's
      noisy RGB JPEG thresholded at ``threshold``), and a mask of small class indices, which thresholding would
      leave all background, is refused.
    * ``num_classes`` >= 3: the mask must hold class indices ``0..num_classes-1`` (integers; channels, if
      several, identical, as in a grey mask saved as RGB). Values are kept as they are (no thresholding).

    A mask that does not fit raises ``ValueError`` naming its file (``meta["filename_or_obj"]``) and the values
    found, instead of training to Dice 0 on masks that became background, or crashing later in one-hot
    encoding with no file named.

    Args:
        keys: keys of the masks, each ``C H W[ D]`` channel-first.
        num_classes: the network's output channels (the bundle's ``num_classes``).
        threshold: binary case: threshold on the 0..255 scale, used when the maximum value is above 1.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: a mask that is not channel-first, or whose values do not fit ``num_classes``.
    """

    def __init__(
        self, keys: KeysCollection, num_classes: int, threshold: float = 127.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(num_classes) < 1:
            raise ValueError(f"SegmentationLabeld: num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask, source = d[key], mask_source(d, key)
            first = _first_channel(mask, key, "SegmentationLabeld")
            if self.num_classes <= 2:
                d[key] = _binarize(first, key, source, self.threshold, self.num_classes)
                continue
            t = torch.as_tensor(mask)
            if t.shape[0] > 1 and not bool((t == t[:1]).all()):
                raise ValueError(
                    f"{source}: mask {key!r} has {t.shape[0]} channels that differ; with num_classes "
                    f"{self.num_classes} a mask holds one class index per pixel (a grey image, or identical channels)"
                )
            t = t[:1]
            fits = bool(((t >= 0) & (t < self.num_classes) & (t == torch.round(t))).all())
            if not fits:
                hint = " (0/255 masks are binary: num_classes 2)" if float(t.max()) == 255 else ""
                raise ValueError(
                    f"{source}: mask {key!r} has values {_values(t)}, which do not fit num_classes {self.num_classes} "
                    f"(class indices 0..{self.num_classes - 1} expected){hint}"
                )
            d[key] = first
        return d


def png_scale(num_classes: int) -> int | None:
    """``SaveImaged(scale=...)`` for a predicted label map written as PNG.

    MONAI's ``scale=255`` clips to [0, 1] before scaling, which suits binary masks (0/255 on disk, as the public
    polyp datasets store them) but would write every class above 1 as 255; multi-class maps are written as
    class indices (``None``: no scaling).
    """
    return 255 if int(num_classes) <= 2 else None
