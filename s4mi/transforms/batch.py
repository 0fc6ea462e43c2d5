"""Random augmentations of whole batches on their device, the same draw applied to several tensors.

MONAI's transforms work per item on the host; these act on ``B C *spatial`` batches already on the training device,
so an image and the pseudo-label map served from a device cache (:class:`s4mi.handlers.PseudoLabelRenderer`) are
augmented together without a round trip through the data pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["random_crop", "random_flip_rot90"]


def random_flip_rot90(
    tensors: tuple[torch.Tensor, ...], generator: torch.Generator | None = None, rot90: bool = True
) -> tuple[torch.Tensor, ...]:
    """Apply the same random flips (each spatial axis, p = 0.5) and 90-degree rotation (first two spatial axes, when
    they are equal) per sample to several ``B C *spatial`` tensors, on their device.

    Pseudo labels rendered over the un-augmented unlabelled set must be augmented exactly like the student's input;
    doing it on the tensors avoids a round trip of the cached labels through the host and the data pipeline.
    The draws (a few numbers per batch) come from ``generator`` (or the global CPU generator, which
    :class:`s4mi.handlers.RandomStates` checkpoints), so a resumed run draws the same.
    """
    first = tensors[0]
    b, nd = first.shape[0], first.ndim - 2
    square = nd >= 2 and first.shape[2] == first.shape[3]
    draws = torch.rand(b, nd + 1, generator=generator)
    outs: list[list[torch.Tensor]] = [[] for _ in tensors]
    for i in range(b):
        dims = [1 + a for a in range(nd) if draws[i, a] < 0.5]  # per-sample tensor: C *spatial
        k = int(draws[i, nd] * 4) if (rot90 and square) else 0
        for j, t in enumerate(tensors):
            x = t[i]
            if dims:
                x = torch.flip(x, dims)
            if k:
                x = torch.rot90(x, k, dims=(1, 2))
            outs[j].append(x)
    return tuple(torch.stack(o) for o in outs)


def random_crop(
    tensors: tuple[torch.Tensor, ...], roi_size: Sequence[int], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """Crop the same random ``roi_size`` box per sample out of several ``B C *spatial`` tensors, on their device.

    With rendered pseudo labels the student trains on patches of whole volumes (3D): the volume and its cached
    label map are cropped together here, so the label never leaves the device. Axes already smaller than or equal
    to the box are kept whole.
    """
    first = tensors[0]
    spatial = first.shape[2:]
    if len(roi_size) != len(spatial):
        raise ValueError(f"crop size {tuple(roi_size)} does not match the spatial shape {tuple(spatial)}")
    roi = [min(int(r), int(s)) for r, s in zip(roi_size, spatial, strict=True)]
    starts = (
        torch.rand(first.shape[0], len(spatial), generator=generator)
        * torch.tensor([s - r + 1 for s, r in zip(spatial, roi, strict=True)], dtype=torch.float32)
    ).long()
    outs: list[list[torch.Tensor]] = [[] for _ in tensors]
    for i in range(first.shape[0]):
        box = (slice(None),) + tuple(slice(int(a), int(a) + r) for a, r in zip(starts[i], roi, strict=True))
        for j, t in enumerate(tensors):
            outs[j].append(t[i][box])
    return tuple(torch.stack(o) for o in outs)
