"""Online pseudo labels: the teacher re-rendered over the whole unlabelled set, served from a cache by item index."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import InvertibleTransform
from torch import nn

from s4mi.keys import ULB_INDEX
from s4mi.losses.targets import check_activation, confidence, hard_labels, probabilities

from .pseudo_label_cache import PseudoLabelCache
from .pseudo_label_writer import PseudoLabelWriter

__all__ = ["PseudoLabelRenderer"]

logger = logging.getLogger(__name__)


class PseudoLabelRenderer:
    """Keep the teacher's probability map of every unlabelled item on the training device, refreshed periodically.

    Three parts, each its own concern: the inference (this class: the teacher over the loader, batched, no grad),
    the cache (:class:`s4mi.handlers.pseudo_label_cache.PseudoLabelCache`: rows by item index, on the device or
    memory-mapped) and the write-back (:class:`s4mi.handlers.pseudo_label_writer.PseudoLabelWriter`: files in the
    source geometry).

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
        self.teacher = teacher
        self.data_loader = data_loader
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.every = int(every)
        self.unit = unit
        self.activation = activation
        self.image_key = image_key
        self.index_key = index_key
        self._fixed_device = torch.device(device) if device is not None else None
        self.amp = amp
        self.write_dir = write_dir
        if invert_transform is None:
            transform = getattr(getattr(data_loader, "dataset", None), "transform", None)
            invert_transform = transform if isinstance(transform, InvertibleTransform) else None
        self.cache = PseudoLabelCache(dtype, max_device_bytes, cache_dir)
        self.writer = PseudoLabelWriter(activation, image_key, invert_transform, write_ext)
        self.renders = 0
        self.last_render_s = 0.0
        self._pending = False

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
        return self.cache.on_device

    @property
    def capacity(self) -> int:
        """Rows in the cache (0 before the first render)."""
        return self.cache.capacity

    def close(self) -> None:
        """Free the cache and remove its memory-mapped file and temporary folder (also done on garbage collection)."""
        self.cache.close()

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
        self.cache.forget()
        first = True
        with self._inference() as device:
            for batch in self.data_loader:
                indices = self._batch_indices(batch)
                probs = self._probs(batch[self.image_key], device)
                if first and len(probs):
                    self.cache.start(tuple(probs.shape[1:]), device)  # a new loader or device: a new cache
                    first = False
                self.cache.store(indices, probs, min_rows=self._dataset_len())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.renders += 1
        self.last_render_s = time.perf_counter() - start
        logger.info(f"pseudo labels rendered for {self.cache.filled} items in {self.last_render_s:.2f} s")

    def lookup(self, indices: torch.Tensor | Sequence[int] | int, check: bool = True) -> torch.Tensor:
        """The cached probabilities of items ``indices`` (:meth:`PseudoLabelCache.lookup`), ``B[C, *spatial]`` on
        ``device``."""
        return self.cache.lookup(indices, check=check)

    def confidence(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-voxel confidence of probabilities ``B[C, *spatial]`` (:func:`s4mi.losses.targets.confidence`)."""
        return confidence(probs, self.activation)

    def hard_label(self, probs: torch.Tensor) -> torch.Tensor:
        """``uint8`` labels of probabilities ``B[C, *spatial]`` (:func:`s4mi.losses.targets.hard_labels`: ``p > 0.5``
        per channel for sigmoid, the argmax class index ``B[1, *spatial]`` for softmax)."""
        return hard_labels(probs, self.activation).to(torch.uint8)

    def write(self, write_dir: str, ext: str | None = None) -> list[str]:
        """Re-run the teacher over the loader and write each item's pseudo label and confidence map in the source
        geometry (:meth:`PseudoLabelWriter.write`).

        Returns:
            the written paths, label then confidence for each item.
        """
        with self._inference() as device:
            return self.writer.write(self.data_loader, lambda images: self._probs(images, device), write_dir, ext)

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
        self.write(self.write_dir)

    def __call__(self, engine: Engine) -> None:
        """Render now (to attach by hand to an event of one's choice)."""
        self.render()

    def __repr__(self) -> str:
        place = "empty" if self.cache.item_shape is None else ("device" if self.cache.on_device else "memmap")
        return (
            f"{type(self).__name__}(every={self.every}, unit={self.unit!r}, activation={self.activation!r}, "
            f"rows={self.capacity}, cache={place}, renders={self.renders})"
        )
