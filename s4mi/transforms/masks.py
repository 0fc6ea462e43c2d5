"""Dictionary transforms that make label masks from any source look alike."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["BinarizeMaskd"]


class BinarizeMaskd(MapTransform):
    """Turn a loaded binary mask into a single-channel {0, 1} label.

    Public polyp datasets store masks as RGB JPEG in 0..255 with compression noise (Kvasir-SEG), or as
    single-channel PNG in 0..255 or 0..1. This keeps the first channel (``C H W`` -> ``1 H W``) and, when the
    mask is not already in {0, 1}, thresholds it at half its range (``threshold`` on a 0..255 scale).

    Args:
        keys: keys of the masks, each ``C H W[ D]`` channel-first.
        threshold: threshold on the 0..255 scale, used when the maximum value is above 1.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 127.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            if mask.ndim < 3:
                raise ValueError(
                    f"BinarizeMaskd: {key!r} must be channel-first C H W[ D], got shape {tuple(mask.shape)}"
                )
            mask = mask[:1]
            cut = self.threshold if float(mask.max()) > 1 else 0.5
            d[key] = (
                (mask > cut).to(torch.float32) if isinstance(mask, torch.Tensor) else (mask > cut).astype("float32")
            )
        return d
