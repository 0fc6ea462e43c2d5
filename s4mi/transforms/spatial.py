"""Helpers that keep a bundle's spatial augmentation valid for any ``spatial_size`` a user gives."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rot90_prob"]


def rot90_prob(prob: float, spatial_size: Sequence[int], spatial_axes: tuple[int, int] = (0, 1)) -> float:
    """``RandRotate90d(prob=...)`` that keeps every sample at ``spatial_size``.

    A 90 or 270 degree rotation swaps the two axes it turns, so on a non-square size (e.g. ``[208, 240]``) half
    the samples of a batch would come out transposed and collation fails ("stack expects each tensor to be equal
    size"). The choice made here: rotate by multiples of 90 degrees only when the two axes are equal, else not
    at all. Nothing else is lost, as the bundles that rotate also flip each axis with probability 0.5, and two
    flips are the 180 degree rotation. The rotation transform stays in the pipeline either way, so its random
    draws, and the seeded augmentation of a square run, are unchanged.

    Args:
        prob: the rotation's probability for a square size.
        spatial_size: the size samples have when the rotation runs, ``H W[ D]``.
        spatial_axes: the two spatial axes the rotation turns (``RandRotate90d``'s ``spatial_axes``).

    Returns:
        ``prob`` when ``spatial_size`` is equal along ``spatial_axes``, else ``0.0``.
    """
    a, b = spatial_axes
    return float(prob) if int(spatial_size[a]) == int(spatial_size[b]) else 0.0
