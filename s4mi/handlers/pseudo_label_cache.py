"""The pseudo-label cache: one row of probabilities per unlabelled item, on the training device or memory-mapped."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["PseudoLabelCache"]

logger = logging.getLogger(__name__)


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class PseudoLabelCache:
    """Rows of probabilities ``[C, *spatial]`` indexed by item, read back on ``device`` by :meth:`lookup`.

    The rows live on ``device`` when they fit in ``max_device_bytes``, otherwise in a NumPy memory-mapped file in
    ``cache_dir`` whose rows :meth:`lookup` reads and moves to ``device``. The cache is sized by the first
    :meth:`store` (``min_rows``: the dataset's length when known) and grows when a larger index comes.

    Args:
        dtype: dtype of the stored probabilities (``torch.float16`` halves the memory).
        max_device_bytes: the largest cache kept on the device, in bytes; when None, a quarter of the free memory
            on CUDA (``torch.cuda.mem_get_info``), no limit on CPU. 0 always uses the memory-mapped file.
        cache_dir: folder of the memory-mapped file; a temporary folder (removed with the cache) when None.
    """

    def __init__(
        self, dtype: torch.dtype = torch.float32, max_device_bytes: int | None = None, cache_dir: str | None = None
    ) -> None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.dtype = dtype
        self.max_device_bytes = max_device_bytes
        self.cache_dir = cache_dir
        # `_cache` (a tensor on device) or `_memmap` (rows on disk); `_filled` (CPU bool): the rows stored
        self._cache: torch.Tensor | None = None
        self._memmap: np.ndarray | None = None
        self._memmap_path: str | None = None
        self._memmap_count = 0
        self._filled = torch.zeros(0, dtype=torch.bool)
        self._item_shape: tuple[int, ...] | None = None
        self._cache_device: torch.device | None = None
        self._tmpdir: str | None = None
        self._finalizers: list[weakref.finalize] = []

    @property
    def on_device(self) -> bool:
        """Whether the rows are a tensor on the device (False: a memory-mapped file, or nothing stored yet)."""
        return self._cache is not None

    @property
    def capacity(self) -> int:
        """Rows in the cache (0 before the first store)."""
        return len(self._filled)

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """The shape of one row, ``None`` before the first store."""
        return self._item_shape

    @property
    def filled(self) -> int:
        """Rows stored since the last :meth:`start`."""
        return int(self._filled.sum())

    @property
    def device(self) -> torch.device:
        """Where :meth:`lookup` returns rows."""
        return self._cache_device or torch.device("cpu")

    def forget(self) -> None:
        """Mark every row as not stored (a refill begins); the memory is kept."""
        self._filled.zero_()

    def start(self, item_shape: tuple[int, ...], device: torch.device) -> None:
        """Begin a refill with rows of ``item_shape`` on ``device``: a new shape or device starts a new cache."""
        if item_shape != self._item_shape or device != self._cache_device:
            self.close()
        self.forget()

    def store(self, indices: torch.Tensor, probs: torch.Tensor, min_rows: int = 0) -> None:
        """Put ``probs`` ``B[C, *spatial]`` in rows ``indices`` (CPU int64, ``B``), growing the cache as needed.

        Raises:
            ValueError: ``probs`` rows differ in shape from the rows stored since :meth:`start`.
            IndexError: a negative index.
        """
        if len(indices) != len(probs):
            raise ValueError(f"batch has {len(indices)} indices for {len(probs)} images")
        if not len(indices):
            return
        if int(indices.min()) < 0:
            raise IndexError(f"negative item index {int(indices.min())}")
        item_shape = tuple(probs.shape[1:])
        if self._item_shape is not None and item_shape != self._item_shape:
            raise ValueError(
                f"item {int(indices[0])} has pseudo-label shape {item_shape}, other items "
                f"{self._item_shape}: the unlabelled preprocessing must give every item one shape"
            )
        need = int(indices.max()) + 1
        if self._item_shape is None:
            self._allocate(max(need, min_rows), item_shape, probs.device)
        elif need > self.capacity:
            self._allocate(max(need, 2 * self.capacity), item_shape, self.device)
        if self._cache is not None:
            self._cache.index_copy_(0, indices.to(self._cache.device, non_blocking=True), probs.to(self.dtype))
        else:
            assert self._memmap is not None
            self._memmap[indices.numpy()] = self._to_numpy(probs)
        self._filled[indices] = True

    def _device_budget(self, device: torch.device) -> float:
        if self.max_device_bytes is not None:
            return float(self.max_device_bytes)
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0] / 4
        return math.inf

    def _numpy_dtype(self) -> np.dtype:
        # NumPy has no bfloat16: its rows are stored as raw 16-bit words and viewed back in `_rows`.
        if self.dtype == torch.bfloat16:
            return np.dtype(np.int16)
        return torch.empty(0, dtype=self.dtype).numpy().dtype

    def _new_memmap(self, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
        folder = self.cache_dir
        if folder is None:
            if self._tmpdir is None:
                self._tmpdir = tempfile.mkdtemp(prefix="s4mi_pseudo_")
                self._finalizers.append(weakref.finalize(self, _remove, self._tmpdir, True))
            folder = self._tmpdir
        os.makedirs(folder, exist_ok=True)
        self._memmap_count += 1
        path = os.path.join(folder, f"pseudo_cache_{os.getpid()}_{id(self):x}_{self._memmap_count}.npy")
        array = np.lib.format.open_memmap(path, mode="w+", dtype=self._numpy_dtype(), shape=shape)
        self._finalizers.append(weakref.finalize(self, _remove, path, False))
        return array, path

    def _allocate(self, n: int, item_shape: tuple[int, ...], device: torch.device) -> None:
        """Make (or grow to) an ``n``-row cache of ``item_shape`` rows, keeping the rows rendered so far."""
        old_n = self.capacity
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        nbytes = n * math.prod(item_shape) * itemsize
        if nbytes <= self._device_budget(device):
            cache = torch.empty((n, *item_shape), dtype=self.dtype, device=device)
            if self._cache is not None and old_n:
                cache[:old_n].copy_(self._cache)
            elif self._memmap is not None and old_n:
                cache[:old_n].copy_(self._rows(torch.arange(old_n)))
            self._drop_memmap()
            self._cache = cache
        else:
            memmap, path = self._new_memmap((n, *item_shape))
            if self._memmap is not None and old_n:
                memmap[:old_n] = self._memmap
            elif self._cache is not None and old_n:
                memmap[:old_n] = self._to_numpy(self._cache)
            self._drop_memmap()
            self._cache = None
            self._memmap, self._memmap_path = memmap, path
        filled = torch.zeros(n, dtype=torch.bool)
        filled[:old_n] = self._filled
        self._filled = filled
        self._item_shape = item_shape
        self._cache_device = device
        logger.info(
            f"pseudo-label cache: {n} x {tuple(item_shape)} {self.dtype} ({nbytes / 2**20:.1f} MiB) "
            f"{'on ' + str(device) if self._cache is not None else 'memory-mapped at ' + str(self._memmap_path)}"
        )

    def _drop_memmap(self) -> None:
        if self._memmap is not None and self._memmap_path is not None:
            self._memmap = None
            _remove(self._memmap_path, False)
            self._memmap_path = None

    def _to_numpy(self, probs: torch.Tensor) -> np.ndarray:
        probs = probs.detach().to("cpu", self.dtype)
        if self.dtype == torch.bfloat16:
            probs = probs.view(torch.int16)
        return probs.numpy()

    def _rows(self, indices: torch.Tensor) -> torch.Tensor:
        """Cached rows ``indices`` (CPU int64), on ``device``."""
        if self._cache is not None:
            return self._cache.index_select(0, indices.to(self._cache.device, non_blocking=True))
        assert self._memmap is not None
        rows = torch.from_numpy(self._memmap[indices.numpy()])
        if self.dtype == torch.bfloat16:
            rows = rows.view(torch.bfloat16)
        return rows.to(self.device)

    def close(self) -> None:
        """Free the rows and remove the memory-mapped file and temporary folder (also done on garbage collection)."""
        self._cache = None
        self._memmap = None
        self._memmap_path = None
        self._filled = torch.zeros(0, dtype=torch.bool)
        self._item_shape = None
        for finalizer in self._finalizers:
            finalizer()
        self._finalizers.clear()
        self._tmpdir = None

    def lookup(self, indices: torch.Tensor | Sequence[int] | int, check: bool = True) -> torch.Tensor:
        """The cached probabilities of items ``indices``.

        Args:
            indices: ``B`` item indices, of any integer dtype and any device.
            check: check that every index was rendered. Indices on CUDA are copied to the host for that (a
                synchronisation); pass False there to skip it (an unknown index then fails inside the gather).

        Returns:
            ``B[C, *spatial]`` probabilities on ``device``, of the cache's dtype (not part of any graph).

        Raises:
            RuntimeError: before the first render.
            IndexError: for an index that was not rendered.
        """
        if self._item_shape is None:
            raise RuntimeError(
                "no pseudo labels yet: call render() or attach() the renderer to the trainer before lookup()"
            )
        idx = torch.as_tensor(indices).reshape(-1)
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise TypeError(f"item indices must be integers, got {idx.dtype}")
        idx = idx.long()
        if self._cache is not None and not check:
            return self._cache.index_select(0, idx.to(self._cache.device, non_blocking=True))
        idx = idx.cpu()
        if check and len(idx):
            inside = (idx >= 0) & (idx < self.capacity)
            known = inside.clone()
            known[inside] = self._filled[idx[inside]]
            if not bool(known.all()):
                bad = int(idx[~known][0])
                raise IndexError(
                    f"item index {bad} has no pseudo label: the last render covered {int(self._filled.sum())} "
                    f"items in [0, {self.capacity})"
                )
        return self._rows(idx)
