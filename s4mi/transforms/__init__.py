"""Dictionary transforms for medical images: masks, two views, weak/strong views, label guards."""

from __future__ import annotations

from .labels import LoadClassLabeld, write_class_label
from .masks import BinarizeMaskd, SegmentationLabeld, png_scale
from .spatial import rot90_prob
from .views import RandViewsd

__all__ = [
    "BinarizeMaskd",
    "LoadClassLabeld",
    "RandViewsd",
    "SegmentationLabeld",
    "png_scale",
    "rot90_prob",
    "write_class_label",
]
