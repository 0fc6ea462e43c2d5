"""MoCo's queue of negative keys and its shuffle-BN, for one process or several (DDP).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (Algorithm 1 and
section 3.3, "Shuffling BN"). Collective operations go through :mod:`ignite.distributed`, so the same code runs
in one process (where they are the identity) and under ``torch.distributed`` with any backend Ignite supports.
Every rank must call the collective functions here (:func:`concat_all_gather`, :meth:`KeyQueue.enqueue`,
:func:`batch_shuffle`, :func:`batch_unshuffle`, :func:`shuffled_key_forward`) in the same order, with batches of
the same shape, as with ``torch.distributed.all_gather``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["concat_all_gather", "KeyQueue", "batch_shuffle", "batch_unshuffle", "shuffled_key_forward"]


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order (MoCo's ``concat_all_gather``); no gradient.

    Uses :func:`ignite.distributed.all_gather`, which concatenates ``torch.distributed.all_gather``'s per-rank
    outputs in rank order. In a single process this is ``x.detach()``.

    Args:
        x: ``B x ...``, the same shape on every rank.

    Returns:
        ``(world_size B) x ...``, rank 0's rows first, on ``x``'s device.
    """
    if idist.get_world_size() == 1:
        return x.detach()
    return cast(torch.Tensor, idist.all_gather(x.detach().contiguous())).to(x.device)


class KeyQueue(nn.Module):
    """A ring buffer of the last ``size`` keys of every rank, the negatives of MoCo and JCL.

    The queue and its write pointer are buffers, so the queue is saved and restored with the module's
    ``state_dict`` (plain tensors: loads with ``torch.load(..., weights_only=True)``) and moves with ``.to()``.
    Unlike MoCo, a gathered batch that does not divide ``size`` is allowed: it wraps around the ring.

    Initial rows are random unit vectors, as in MoCo. They are drawn from the global torch generator, so seed
    every rank alike (Ignite's ``manual_seed``) for identical queues before the first ``size`` keys arrive.

    Args:
        dim: key dimension ``D`` (128 in MoCo v2 and S2MTS2).
        size: number of keys ``K`` (65,536 in MoCo and S2MTS2).
        normalize_init: L2-normalise the random initial rows.

    Example:
        .. code-block:: python

            queue = KeyQueue(128, 65536).to(device)
            loss = jcl_loss(q, keys, queue(), lam)
            queue.enqueue(jcl_enqueue_keys(keys))  # every rank, every step
            loss.backward()
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, dim: int, size: int = 65536, normalize_init: bool = True) -> None:
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"dim and size must be >= 1, got dim={dim}, size={size}")
        queue = torch.randn(size, dim)
        if normalize_init:
            queue = F.normalize(queue, dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def dim(self) -> int:
        return int(self.queue.shape[1])

    @property
    def size(self) -> int:
        return int(self.queue.shape[0])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}"

    def forward(self) -> torch.Tensor:
        """The negatives, ``K x D``: a detached copy of the queue.

        A copy, as MoCo's ``self.queue.clone().detach()``: the loss's graph keeps the negatives for the backward
        pass, and the usual order (loss, then :meth:`enqueue`, then ``backward``) would otherwise fail autograd's
        in-place check. Read :attr:`queue` directly to avoid the copy when enqueueing after ``backward``.
        """
        return self.queue.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Gather ``keys`` from every rank and write them at the pointer, rank 0's first, wrapping around.

        Args:
            keys: ``B x D`` (the same ``B`` on every rank); cast to the queue's dtype and device.

        Raises:
            ValueError: if ``keys`` is not ``B x D`` with the queue's ``D``.
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be B x {self.dim} (B x D of the queue), got shape {tuple(keys.shape)}")
        keys = concat_all_gather(keys).to(device=self.queue.device, dtype=self.queue.dtype)
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.queue.device)) % self.size
        if n > self.size:
            # Later keys overwrite earlier ones on the same slot; only the last `size` survive.
            keys, idx = keys[-self.size :], idx[-self.size :]
        self.queue.index_copy_(0, idx, keys)
        self.ptr.copy_((self.ptr + n) % self.size)


def _shuffle_index(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Drawn on the generator's device, so a CPU generator works for CUDA batches too.
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle a batch across all ranks (MoCo's ``_batch_shuffle_ddp``); no gradient.

    Under DDP every rank's batch is gathered, rank 0 draws one permutation of the global batch and broadcasts it,
    and each rank keeps its slice, so the key encoder's BatchNorm statistics on a rank come from other images than
    its query encoder's. In a single process the batch is permuted in place (BatchNorm statistics over the whole
    batch do not change: use :func:`shuffled_key_forward` there).

    Args:
        x: ``B x ...``, the same shape on every rank.
        generator: draws the permutation (``torch.randperm(world_size * B, generator=generator)``, rank 0's draw is
            used); the global generator when None.

    Returns:
        ``(x_shuffled, idx_unshuffle)``: ``B x ...`` and the ``world_size B`` index for :func:`batch_unshuffle`.
    """
    world = idist.get_world_size()
    if world == 1:
        idx_shuffle = _shuffle_index(x.shape[0], generator, x.device)
        return x.detach()[idx_shuffle], torch.argsort(idx_shuffle)
    x_all = concat_all_gather(x)
    idx_shuffle = _shuffle_index(x_all.shape[0], generator, x.device)
    idx_shuffle = cast(torch.Tensor, idist.broadcast(idx_shuffle, src=0)).to(x.device)
    idx_this = idx_shuffle.view(world, -1)[idist.get_rank()]
    return x_all[idx_this], torch.argsort(idx_shuffle)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` (MoCo's ``_batch_unshuffle_ddp``): each rank gets its own images back, in order.

    Args:
        x: ``B x ...``, rows in the shuffled order (e.g. the key encoder's output on the shuffled batch).
        idx_unshuffle: the index returned by :func:`batch_shuffle`.

    Returns:
        ``B x ...`` in the original order of this rank's batch; no gradient.
    """
    world = idist.get_world_size()
    if world == 1:
        return x.detach()[idx_unshuffle.to(x.device)]
    x_all = concat_all_gather(x)
    return x_all[idx_unshuffle.to(x.device).view(world, -1)[idist.get_rank()]]


@torch.no_grad()
def shuffled_key_forward(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    num_splits: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the key encoder with shuffle-BN, in one process or under DDP; no gradient (MoCo's key branch).

    The batch is shuffled (across ranks under DDP, see :func:`batch_shuffle`), cut into ``num_splits`` contiguous
    chunks that the encoder sees one at a time, and put back in order. Each chunk's BatchNorm normalises over a
    random subset of the batch, so a key's statistics are not those of its own query's batch, which is the
    "cheating" shortcut shuffle-BN removes (MoCo, section 3.3). In one process this is the equivalent of the
    split BatchNorm of MoCo's CIFAR demo and lightly's ``SplitBatchNorm``. It only matters with the key encoder
    in train mode (BatchNorm on batch statistics); in eval mode the result equals a plain forward up to
    rounding.

    Each chunk updates BatchNorm's running statistics once (``num_splits`` momentum steps per call); an
    :class:`s4mi.handlers.EMATeacher` with ``buffers="copy"`` overwrites them with the student's anyway.

    Args:
        encoder: the key encoder (any callable mapping ``b x ...`` to ``b x ...``).
        x: the key views, ``B x ...`` (the same shape on every rank).
        num_splits: chunks per rank; None for 1 under DDP (exactly MoCo's shuffle-BN) and 2 in a single process.
            Chunk sizes differ by at most one (``torch.tensor_split``).
        generator: draws the permutation, as in :func:`batch_shuffle`, for reproducible runs.

    Returns:
        ``encoder(x)`` row for row, ``B x ...``.

    Raises:
        ValueError: if ``num_splits`` is not in ``[1, B]``.
    """
    if num_splits is None:
        num_splits = 1 if idist.get_world_size() > 1 else 2
    if not 1 <= num_splits <= x.shape[0]:
        raise ValueError(f"num_splits must be in [1, batch size {x.shape[0]}], got {num_splits}")
    x_shuffled, idx_unshuffle = batch_shuffle(x, generator)
    if num_splits == 1:
        out = encoder(x_shuffled)
    else:
        out = torch.cat([encoder(chunk) for chunk in torch.tensor_split(x_shuffled, num_splits)])
    return batch_unshuffle(out, idx_unshuffle)
