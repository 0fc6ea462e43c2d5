"""Dictionary transforms for medical images: masks, two views, weak/strong views, label guards."""

from __future__ import annotations

from .masks import BinarizeMaskd

__all__ = ["BinarizeMaskd"]
