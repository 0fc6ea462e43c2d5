"""Dictionary transforms that make several independently augmented views of one image (contrastive learning)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable
from monai.utils import MAX_SEED

__all__ = ["RandViewsd", "unlabelled_transforms"]


class RandViewsd(Randomizable, MapTransform):
    """Write ``len(names)`` views of ``data[key]``, each through its own draw of a random transform.

    MONAI's dictionary transforms apply *one* draw of their random parameters to every key they are given, which
    is right for an image and its mask but wrong for contrastive views (MoCo's query and keys must be augmented
    independently). This runs ``transform`` once per view on ``{key: data[key]}``, so every view gets its own crop,
    affine, intensity jitter, blur and erasing, and writes the result under the view's name.

    It is :class:`~monai.transforms.Randomizable`: :meth:`set_random_state` seeds every view's draw, so
    :class:`s4mi.data.loaders.ResumableLoader` makes the views of an item reproducible (and resumable) whatever
    ``num_workers`` is.

    Args:
        keys: the one key to copy from (e.g. ``"image"``), ``C H W[ D]``.
        names: output keys of the views, e.g. ``["image_q", "image_k0", "image_k1"]`` (a name may equal ``keys``;
            the source is read before any view is written).
        transform: a callable on ``{key: image}`` dictionaries (usually a :class:`monai.transforms.Compose` of
            random dictionary transforms on ``key``); randomisable transforms are reseeded per view.
        allow_missing_keys: don't raise if the key is missing.

    Raises:
        ValueError: ``keys`` names more than one key, or ``names`` is empty or repeats a name.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        names: Sequence[str],
        transform: Callable[[dict[Hashable, Any]], Mapping[Hashable, Any]],
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandViewsd makes views of one key, got keys {list(self.keys)}")
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"RandViewsd needs distinct view names, got {names}")
        self.names = names
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandViewsd:
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self._view_seeds = [int(s) for s in self.R.randint(MAX_SEED, size=len(self.names), dtype="uint32")]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        if key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"RandViewsd: key {key!r} not found (has {sorted(map(str, d))})")
        self.randomize()
        source = d[key]
        views = {}
        for name, seed in zip(self.names, self._view_seeds, strict=True):
            if isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=seed)
            out = self.transform({key: source})
            if key not in out:
                raise KeyError(f"RandViewsd: the view transform did not return key {key!r} for view {name!r}")
            views[name] = out[key]
        d.update(views)
        return d


def unlabelled_transforms(
    load: Sequence[Callable],
    spatial: Sequence[Callable],
    augmentation: Sequence[Callable],
    to_tensor: Sequence[Callable],
    render_every: int | float | None = 0,
) -> list[Callable]:
    """The unlabelled stream's transform list of the online pseudo-labelling student stage.

    Pseudo labels rendered ahead of time (``render_every > 0``, :class:`s4mi.handlers.PseudoLabelRenderer`) are
    aligned with the un-augmented image, so the spatial augmentation is left out then; the teacher's online pseudo
    labels (``render_every == 0``) are computed on the augmented batch itself, so it stays.

    Returns:
        ``load + spatial + augmentation + to_tensor``, without ``spatial`` when pseudo labels are rendered.
    """
    return [*load, *([] if render_every else spatial), *augmentation, *to_tensor]
