"""Transforms: dictionary transforms for medical images (masks, views, label guards) and on-device batch augmentations."""

from __future__ import annotations

from .batch import random_crop, random_flip_rot90
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
    "random_crop",
    "random_flip_rot90",
    "rot90_prob",
    "write_class_label",
]
