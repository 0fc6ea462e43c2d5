"""Online pseudo labels: re-render the teacher's probabilities over the unlabelled set and write them back."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Compose, Invertd, InvertibleTransform, MapTransform, SaveImage
from torch import nn

from s4mi.keys import ULB_INDEX
from s4mi.losses.targets import check_activation, confidence, hard_labels, probabilities

__all__ = ["PseudoLabelRenderer"]

logger = logging.getLogger(__name__)

_PRED = "pred"


def _source_ext(filename: str) -> str:
    """The extension of a source file, keeping compound ones (``.nii.gz``)."""
    suffixes = Path(filename).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _remove(path: str, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _is_dict_transform(transform: InvertibleTransform) -> bool:
    if isinstance(transform, Compose):
        return any(isinstance(t, MapTransform) for t in transform.flatten().transforms)
    return isinstance(transform, MapTransform)


class PseudoLabelRenderer:
    """Keep the teacher's probability map of every unlabelled item on the training device, refreshed periodically.

    Online pseudo-labelling (Pham Van et al., "Online pseudo labeling for polyp segmentation with momentum
    networks", 2022) trains the student against pseudo labels that a momentum teacher re-renders over the whole
    unlabelled set every few epochs, rather than against the teacher's output on the current batch. This handler
    does the re-rendering: one pass of ``teacher`` over ``data_loader`` with a MONAI inferer (``SimpleInferer`` for
    2D images, ``SlidingWindowInferer`` for volumes), batched, on ``device``, under ``torch.no_grad`` (and CUDA
    autocast with ``amp``), teacher in eval mode. The probabilities ``B[C, *spatial]`` are kept in a cache with one
    row per item index (``index_key``, the item's position in the unlabelled list), from which the trainer's
    iteration takes a batch's pseudo labels with :meth:`lookup` without a round trip through the host.

    The cache lives on ``device`` when it fits in ``max_device_bytes``, otherwise in a NumPy memory-mapped file in
    ``cache_dir`` from which :meth:`lookup` reads rows and moves them to ``device``. It is sized from
    ``len(data_loader.dataset)`` and the first batch, and grows when the loader has no sized dataset. It is not
    checkpointed: every run, fresh or resumed, re-renders it before its first iteration.

    :meth:`write` writes each item's hard label and confidence map next to each other, with the source image's
    geometry (the loader's spatial transforms are inverted with MONAI's ``Invertd``/``inverse`` and the files are
    written by ``SaveImage``), for review in MONAI Label, for instance.

    Args:
        teacher: the network that renders (e.g. ``EMATeacher.ema_model``). Never trained here.
        data_loader: yields dict batches of the unlabelled set with ``image_key`` (``B[C_in, *spatial]``, a
            ``MetaTensor`` from a deterministic preprocessing for :meth:`write`) and ``index_key`` (``B`` ints).
        inferer: MONAI inferer called as ``inferer(images, teacher)``; ``SimpleInferer()`` when None.
        every: render every ``every`` units (see :meth:`attach`).
        unit: ``"epoch"`` or ``"iteration"``.
        activation: ``"sigmoid"`` (binary or multi-label) or ``"softmax"`` (multi-class, over dim 1).
        image_key: image key of a batch.
        index_key: item-index key of a batch.
        device: training device; the teacher's device at render time when None.
        dtype: dtype of the cached probabilities (``torch.float16`` halves the memory).
        max_device_bytes: the largest cache kept on ``device``, in bytes; when None, a quarter of the free memory
            on CUDA (``torch.cuda.mem_get_info``), no limit on CPU. 0 always uses the memory-mapped file.
        cache_dir: folder of the memory-mapped cache; a temporary folder (removed with the handler) when None.
        amp: run the teacher under ``torch.autocast`` on CUDA.
        write_dir: if set, :meth:`attach` writes the labels there when the run completes.
        write_ext: extension of the written files; the source file's when None.
        invert_transform: the loader's preprocessing, inverted to restore the source geometry in :meth:`write`;
            ``data_loader.dataset.transform`` when None.

    Attributes:
        renders: renders done so far.
        last_render_s: wall seconds of the last render.

    Example:
        .. code-block:: python

            renderer = PseudoLabelRenderer(teacher.ema_model, ulb_loader, every=5, write_dir="pseudo")
            renderer.attach(trainer)
            # in the trainer's iteration:
            pseudo_label = renderer.lookup(batch["ulb_index"])  # B[C, H, W] on the training device
    """

    def __init__(
        self,
        teacher: nn.Module,
        data_loader: Iterable[dict],
        inferer: Inferer | None = None,
        every: int = 1,
        unit: Literal["epoch", "iteration"] = "epoch",
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
        image_key: str = "image",
        index_key: str = ULB_INDEX,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        max_device_bytes: int | None = None,
        cache_dir: str | None = None,
        amp: bool = False,
        write_dir: str | None = None,
        write_ext: str | None = None,
        invert_transform: InvertibleTransform | None = None,
    ) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if unit not in ("epoch", "iteration"):
            raise ValueError(f"unit must be 'epoch' or 'iteration', got {unit!r}")
        check_activation(activation)
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.teacher = teacher
        self.data_loader = data_loader
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.every = int(every)
        self.unit = unit
        self.activation = activation
        self.image_key = image_key
        self.index_key = index_key
        self._fixed_device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.max_device_bytes = max_device_bytes
        self.cache_dir = cache_dir
        self.amp = amp
        self.write_dir = write_dir
        self.write_ext = write_ext
        if invert_transform is None:
            transform = getattr(getattr(data_loader, "dataset", None), "transform", None)
            invert_transform = transform if isinstance(transform, InvertibleTransform) else None
        self.invert_transform = invert_transform
        self.renders = 0
        self.last_render_s = 0.0
        self._pending = False
        # the cache: `_cache` (a tensor on device) or `_memmap` (rows on disk), `_filled` (CPU bool, rendered rows)
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
    def device(self) -> torch.device:
        """The device of the rendering and of :meth:`lookup`'s result."""
        if self._fixed_device is not None:
            return self._fixed_device
        param = next(iter(self.teacher.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def on_device(self) -> bool:
        """Whether the cache is a tensor on ``device`` (False: a memory-mapped file, or nothing rendered yet)."""
        return self._cache is not None

    @property
    def capacity(self) -> int:
        """Rows in the cache (0 before the first render)."""
        return len(self._filled)

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
        """Free the cache and remove its memory-mapped file and temporary folder (also done on garbage collection)."""
        self._cache = None
        self._memmap = None
        self._memmap_path = None
        self._filled = torch.zeros(0, dtype=torch.bool)
        self._item_shape = None
        for finalizer in self._finalizers:
            finalizer()
        self._finalizers.clear()
        self._tmpdir = None

    @contextlib.contextmanager
    def _inference(self) -> Iterator[torch.device]:
        """Teacher in eval mode (its mode restored after), no grad, CUDA autocast with ``amp``."""
        device = self.device
        was_training = self.teacher.training
        self.teacher.eval()
        autocast = torch.autocast("cuda", enabled=self.amp and device.type == "cuda")
        try:
            with torch.no_grad(), autocast:
                yield device
        finally:
            self.teacher.train(was_training)

    def _probs(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Teacher probabilities ``B[C, *spatial]`` (float32) of ``images`` ``B[C_in, *spatial]``."""
        if isinstance(images, MetaTensor):
            # The network needs no metadata, and MetaTensor's per-op bookkeeping slows every layer down.
            images = images.as_tensor()
        logits = self.inferer(images.to(device, non_blocking=True), self.teacher)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if isinstance(logits, MetaTensor):
            logits = logits.as_tensor()
        logits = logits.float()
        return probabilities(logits, self.activation)

    def _batch_indices(self, batch: dict) -> torch.Tensor:
        if self.index_key not in batch:
            raise KeyError(f"batch has no {self.index_key!r} (the item index); its keys are {sorted(batch)}")
        return torch.as_tensor(batch[self.index_key]).reshape(-1).to("cpu", torch.int64)

    def _dataset_len(self) -> int:
        with contextlib.suppress(TypeError, AttributeError):
            return len(self.data_loader.dataset)  # type: ignore[attr-defined]
        return 0

    def render(self) -> None:
        """Run the teacher over the whole loader and refill the cache (one row per item index)."""
        start = time.perf_counter()
        self._filled.zero_()
        first = True
        with self._inference() as device:
            for batch in self.data_loader:
                indices = self._batch_indices(batch)
                probs = self._probs(batch[self.image_key], device)
                if len(indices) != len(probs):
                    raise ValueError(f"batch has {len(indices)} indices for {len(probs)} images")
                if not len(indices):
                    continue
                if int(indices.min()) < 0:
                    raise IndexError(f"negative item index {int(indices.min())} in {self.index_key!r}")
                item_shape = tuple(probs.shape[1:])
                if first and (item_shape != self._item_shape or device != self._cache_device):
                    self.close()  # a new loader or device since the last render: start a new cache
                elif item_shape != self._item_shape:
                    raise ValueError(
                        f"item {int(indices[0])} has pseudo-label shape {item_shape}, other items "
                        f"{self._item_shape}: the unlabelled preprocessing must give every item one shape"
                    )
                first = False
                need = int(indices.max()) + 1
                if self._item_shape is None:
                    self._allocate(max(need, self._dataset_len()), item_shape, device)
                elif need > self.capacity:
                    self._allocate(max(need, 2 * self.capacity), item_shape, device)
                if self._cache is not None:
                    self._cache.index_copy_(0, indices.to(device, non_blocking=True), probs.to(self.dtype))
                else:
                    assert self._memmap is not None
                    self._memmap[indices.numpy()] = self._to_numpy(probs)
                self._filled[indices] = True
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.renders += 1
        self.last_render_s = time.perf_counter() - start
        logger.info(f"pseudo labels rendered for {int(self._filled.sum())} items in {self.last_render_s:.2f} s")

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

    def confidence(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-voxel confidence of probabilities ``B[C, *spatial]`` (:func:`s4mi.losses.targets.confidence`)."""
        return confidence(probs, self.activation)

    def hard_label(self, probs: torch.Tensor) -> torch.Tensor:
        """``uint8`` labels of probabilities ``B[C, *spatial]`` (:func:`s4mi.losses.targets.hard_labels`: ``p > 0.5``
        per channel for sigmoid, the argmax class index ``B[1, *spatial]`` for softmax)."""
        return hard_labels(probs, self.activation).to(torch.uint8)

    def _invert(self, probs: torch.Tensor, image: MetaTensor) -> MetaTensor:
        """``probs`` ``[C, *spatial]`` of the preprocessed ``image``, moved back to the source geometry."""
        pred = MetaTensor(probs)
        pred.meta = deepcopy(image.meta)
        if not image.applied_operations:
            return pred
        transform = self.invert_transform
        if transform is None:
            raise ValueError(
                f"{image.meta.get('filename_or_obj', 'the image')} went through spatial transforms "
                f"({[op.get('class') for op in image.applied_operations]}) but no invert_transform was given, "
                f"and the loader's dataset has no invertible `transform`"
            )
        if _is_dict_transform(transform):
            inverter = Invertd(keys=_PRED, transform=transform, orig_keys=self.image_key, nearest_interp=False)
            return inverter({self.image_key: image, _PRED: pred})[_PRED]
        pred.applied_operations = deepcopy(image.applied_operations)
        return transform.inverse(pred)

    def write(self, write_dir: str, ext: str | None = None) -> list[str]:
        """Re-run the teacher over the loader and write each item's pseudo label and confidence map.

        For each item, ``<write_dir>/<stem>_pseudo<ext>`` (the hard label, ``uint8``, see :meth:`hard_label`) and
        ``<write_dir>/<stem>_confidence<ext>`` (see :meth:`confidence`; ``float32`` in NIfTI, ``uint8`` 0..255
        in PNG), where ``<stem>`` is the source file's name (``meta["filename_or_obj"]``) without extension. The
        probabilities are moved back to the source geometry (the inverse of the loader's spatial transforms,
        with linear interpolation) before thresholding, and the files are written with the source's affine
        (NIfTI) or size (PNG).

        Args:
            write_dir: output folder (made if missing).
            ext: extension such as ``".nii.gz"`` or ``".png"``; the source file's when None.

        Returns:
            the written paths, label then confidence for each item.
        """
        paths: list[str] = []
        savers: dict[tuple[str, str], SaveImage] = {}

        def saver(kind: str, out_ext: str) -> SaveImage:
            if (kind, out_ext) not in savers:
                png = out_ext.lower() == ".png"
                dtype = np.uint8 if kind == "pseudo" or png else np.float32
                savers[kind, out_ext] = SaveImage(
                    output_dir=write_dir,
                    output_postfix=kind,
                    output_ext=out_ext,
                    output_dtype=dtype,
                    resample=False,
                    separate_folder=False,
                    print_log=False,
                    scale=255 if png and kind == "confidence" else None,
                    savepath_in_metadict=True,
                )
            return savers[kind, out_ext]

        os.makedirs(write_dir, exist_ok=True)
        with self._inference() as device:
            for batch in self.data_loader:
                images = batch[self.image_key]
                if not isinstance(images, MetaTensor):
                    raise TypeError(f"batch[{self.image_key!r}] must be a MetaTensor (with the source file's metadata)")
                probs = self._probs(images, device).cpu()
                for prob, image in zip(probs, decollate_batch(images, detach=True), strict=True):
                    source = str(image.meta.get("filename_or_obj", ""))
                    if not source:
                        raise ValueError("the image has no meta['filename_or_obj'] to name the written files")
                    out_ext = ext or self.write_ext or _source_ext(source)
                    pred = self._invert(prob, image)
                    p = pred.as_tensor()[None]
                    for kind, values in (
                        ("pseudo", self.hard_label(p)[0]),
                        ("confidence", self.confidence(p)[0]),
                    ):
                        out = MetaTensor(values, meta=deepcopy(pred.meta))
                        saver(kind, out_ext)(out)
                        paths.append(str(out.meta["saved_to"]))
        logger.info(f"wrote {len(paths) // 2} pseudo labels and confidence maps to {write_dir}")
        return paths

    def attach(self, engine: Engine) -> None:
        """Render at the start of every run and every ``every`` epochs/iterations; write at the end if asked.

        A run, fresh or resumed from a checkpoint, always renders first (the cache is not checkpointed). Each
        render happens at the iteration that follows its trigger (``STARTED``, or
        ``EPOCH_COMPLETED(every=every)`` / ``ITERATION_COMPLETED(every=every)``), right before the step that
        reads the labels: by then every handler of the trigger's event, and of ``EPOCH_STARTED``, has run, so
        the teacher rendered is the one after a ``CheckpointLoader`` and after the teacher's own update or
        start-of-run sync, whatever order they were attached in. A render due after the run's last iteration is
        skipped (nothing would read it). With ``write_dir`` set, :meth:`write` runs at ``COMPLETED``.
        """
        engine.add_event_handler(Events.STARTED, self._mark_pending)
        trigger = Events.EPOCH_COMPLETED if self.unit == "epoch" else Events.ITERATION_COMPLETED
        engine.add_event_handler(trigger(every=self.every), self._mark_pending)
        engine.add_event_handler(Events.ITERATION_STARTED, self._render_if_pending)
        if self.write_dir is not None:
            engine.add_event_handler(Events.COMPLETED, self._write_on_completed)

    def _mark_pending(self, engine: Engine) -> None:
        self._pending = True

    def _render_if_pending(self, engine: Engine) -> None:
        if self._pending:
            self._pending = False
            self.render()

    def _write_on_completed(self, engine: Engine) -> None:
        assert self.write_dir is not None
        self.write(self.write_dir, self.write_ext)

    def __call__(self, engine: Engine) -> None:
        """Render now (to attach by hand to an event of one's choice)."""
        self.render()

    def __repr__(self) -> str:
        place = "empty" if self._item_shape is None else ("device" if self._cache is not None else "memmap")
        return (
            f"{type(self).__name__}(every={self.every}, unit={self.unit!r}, activation={self.activation!r}, "
            f"rows={self.capacity}, cache={place}, renders={self.renders})"
        )
