"""Samplers and loaders shared by s4mi bundles and engines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import RandomSampler

__all__ = ["SemiSupervisedLoader", "epoch_sampler"]


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


class SemiSupervisedLoader:
    """Iterate a labelled and an unlabelled loader together: each item is ``{"labeled": batch, "unlabeled": batch}``.

    A MONAI workflow takes one data loader, so this joins the two streams, each with its own batch size, sampler
    and transforms. One epoch is ``epoch_length`` iterations, set by the labelled loader, the unlabelled loader or
    an explicit count; the other stream is cycled (restarted when exhausted, calling ``set_epoch`` on a
    ``DistributedSampler`` so every pass is shuffled anew and in step across ranks).

    Args:
        labeled: loader of labelled batches.
        unlabeled: loader of unlabelled batches.
        epoch_length: ``"labeled"``, ``"unlabeled"`` or a number of iterations.

    Raises:
        ValueError: when a loader is empty or ``epoch_length`` is not understood.
    """

    def __init__(self, labeled: Iterable, unlabeled: Iterable, epoch_length: str | int = "unlabeled") -> None:
        for name, loader in (("labeled", labeled), ("unlabeled", unlabeled)):
            if isinstance(loader, Sized) and len(loader) == 0:
                raise ValueError(f"SemiSupervisedLoader: the {name} loader is empty (no {name} items in the datalist?)")
        self.labeled, self.unlabeled = labeled, unlabeled
        if epoch_length in ("labeled", "unlabeled"):
            source = labeled if epoch_length == "labeled" else unlabeled
            if not isinstance(source, Sized):
                raise ValueError(f"epoch_length={epoch_length!r} needs a sized {epoch_length} loader")
            self.epoch_length = len(source)
        elif isinstance(epoch_length, int) and epoch_length > 0:
            self.epoch_length = epoch_length
        else:
            raise ValueError(f"epoch_length must be 'labeled', 'unlabeled' or a positive int, got {epoch_length!r}")
        self._passes = {"labeled": 0, "unlabeled": 0}

    def __len__(self) -> int:
        return self.epoch_length

    def _cycle(self, name: str, loader: Iterable) -> Iterator[Any]:
        while True:
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self._passes[name])  # type: ignore[union-attr]
            self._passes[name] += 1
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"SemiSupervisedLoader: the {name} loader yielded no batch")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        lb, ulb = self._cycle("labeled", self.labeled), self._cycle("unlabeled", self.unlabeled)
        for _ in range(self.epoch_length):
            yield {"labeled": next(lb), "unlabeled": next(ulb)}
