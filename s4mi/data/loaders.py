"""Samplers and loaders shared by s4mi bundles and engines."""

from __future__ import annotations

from collections.abc import Sized

import torch
from torch.utils.data import RandomSampler

__all__ = ["epoch_sampler"]


def epoch_sampler(dataset: Sized, samples_per_epoch: int | None = None, seed: int = 0) -> RandomSampler | None:
    """A sampler that draws ``samples_per_epoch`` items per epoch with replacement, or None for a plain shuffle.

    Label-fraction benchmarks compare runs at equal numbers of optimisation steps: with 10 % of the labels an
    "epoch" over the labelled set is ten times shorter, so a fixed epoch count would under-train the small run.
    Bundles pass the result as the DataLoader's ``sampler`` and set ``shuffle`` to ``sampler is None``.

    Args:
        dataset: the training dataset.
        samples_per_epoch: items drawn per epoch; None or 0 keeps the plain one-pass shuffle.
        seed: seed of the sampler's own generator, so the draw does not depend on other random state.

    Raises:
        ValueError: for an empty dataset or a negative count.
    """
    if not samples_per_epoch:
        return None
    if samples_per_epoch < 0:
        raise ValueError(f"samples_per_epoch must be positive, got {samples_per_epoch}")
    if len(dataset) == 0:
        raise ValueError("epoch_sampler: the training dataset is empty (no labelled items)")
    generator = torch.Generator().manual_seed(seed)
    return RandomSampler(dataset, replacement=True, num_samples=int(samples_per_epoch), generator=generator)  # type: ignore[arg-type]
