"""Samplers and loaders shared by s4mi bundles and engines."""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.transforms import Randomizable
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler

__all__ = [
    "DistributedFullBatchSampler",
    "ResumableLoader",
    "SemiSupervisedLoader",
    "epoch_sampler",
    "full_batch_sampler",
    "prefetched",
]


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


def full_batch_sampler(
    dataset: Sized,
    batch_size: int,
    seed: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
) -> RandomSampler | DistributedFullBatchSampler:
    """A shuffling sampler whose passes fill every batch: ``ceil(n / batch_size) * batch_size`` items per pass.

    A semi-supervised trainer cycles its small labelled set. With a plain shuffle, a labelled set that is not a
    multiple of the batch size ends every pass with a short batch (225 labels in batches of 32 leave one image):
    that step's supervised loss is a mean over a few images yet weighs as much as a full batch's, and batch norm
    normalises it with their statistics alone. Passes are drawn without replacement, so each pass holds every item
    at least once; the remainder is the start of a fresh permutation (PyTorch's
    :class:`~torch.utils.data.RandomSampler` with ``num_samples`` beyond the dataset). A set smaller than one
    batch is repeated to fill it. Bundles pass it as the labelled DataLoader's ``sampler``; the
    :class:`ResumableLoader` reseeds its generator for every pass.

    Under ``torch.distributed`` with more than one process (or with ``num_replicas`` above 1) it returns a
    :class:`DistributedFullBatchSampler`, which gives every rank whole batches of one shared pass. A
    :class:`~torch.utils.data.distributed.DistributedSampler` only pads the set to a multiple of the world size,
    so each rank would still end its pass with a short batch.

    Args:
        dataset: the labelled dataset.
        batch_size: the labelled batch size (per process).
        seed: seed of the sampler's own generator.
        num_replicas: number of processes; the default process group's world size when None (1 without one).
        rank: this process's rank; the default process group's rank when None (0 without one).

    Raises:
        ValueError: for an empty dataset, a batch size below 1, or a rank outside ``[0, num_replicas)``.
    """
    if batch_size < 1:
        raise ValueError(f"full_batch_sampler: batch_size must be at least 1, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError("full_batch_sampler: the labelled dataset is empty (no labelled items in the datalist?)")
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas > 1 or rank != 0:
        return DistributedFullBatchSampler(n, batch_size, seed, num_replicas, rank)
    num_samples = -(-n // batch_size) * batch_size
    generator = torch.Generator().manual_seed(seed)
    return RandomSampler(dataset, replacement=False, num_samples=num_samples, generator=generator)  # type: ignore[arg-type]


class DistributedFullBatchSampler(Sampler[int]):
    """One rank's share of a pass in which every rank draws whole batches (see :func:`full_batch_sampler`).

    All ranks draw the same pass, fixed by ``(seed, epoch)``: concatenated permutations of the ``n`` items cut to
    ``num_replicas * ceil(n / (batch_size * num_replicas)) * batch_size`` indices, so the pass holds every item at
    least once; rank ``r`` takes indices ``r, r + num_replicas, ...``. Call :meth:`set_epoch` before each pass (the
    :class:`ResumableLoader` does), as with PyTorch's ``DistributedSampler``.

    Args:
        n: number of items in the labelled dataset.
        batch_size: the per-process batch size.
        seed: seed shared by all ranks.
        num_replicas: number of processes.
        rank: this process's rank.

    Raises:
        ValueError: for ``n`` or ``batch_size`` below 1, or a rank outside ``[0, num_replicas)``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, num_replicas: int, rank: int) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"DistributedFullBatchSampler: n and batch_size must be at least 1, got {n}, {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedFullBatchSampler: rank {rank} is outside [0, num_replicas={num_replicas})")
        self.n, self.seed, self.num_replicas, self.rank = n, int(seed), num_replicas, rank
        self.num_samples = -(-n // (batch_size * num_replicas)) * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        order = torch.cat([torch.randperm(self.n, generator=generator) for _ in range(-(-total // self.n))])
        return iter(order[:total][self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


class _SeededItems(Dataset):
    """Wrap a map-style dataset so each item is fetched as ``(index, seed)``, reseeding its random transforms first.

    Seeding per item (not per worker or per batch) makes every augmentation a function of the run seed and the
    item's place in the run alone, whatever ``num_workers`` is and wherever a run was resumed.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        transform = getattr(self.dataset, "transform", None)
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=int(seed))
        return self.dataset[index]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetched(
    source: Iterator[Any],
    snapshot: Callable[[], Any],
    show: Callable[[Any], None],
    restore: Callable[[Any], None],
    size: int,
) -> Iterator[Any]:
    """Iterate ``source`` in a background thread, ``size`` items ahead, keeping a resumable loader's state exact.

    The thread makes the next batches (reading, augmenting, collating) while the training step runs. A loader's
    ``state_dict`` must still name the batches the *consumer* has had: each item is queued with ``snapshot()`` taken
    right after the source produced it, ``show`` gets the snapshot of each item as the consumer takes it (the loader's
    ``state_dict`` returns it while the iteration runs; None at the end), and an iteration left early calls
    ``restore`` with the last one shown, so a checkpoint taken between two steps, and the next iteration, see the
    state of an unprefetched loader.
    MONAI's :class:`~monai.data.ThreadBuffer` does the same buffering but ends the iteration quietly when the source
    raises (its thread dies and the consumer sees the end of the data): here the source's exception is raised in the
    consumer, so a broken image stops the run with its message instead of cutting the epoch short.

    Args:
        source: the iterator (run in the thread only, from its first item).
        snapshot: the loader's live state, read in the thread after each item.
        show: takes the state the loader must report now (None: its live state again).
        restore: sets the loader's live state (called in the consumer's thread, the thread stopped).
        size: items made ahead (>= 1).
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(entry: tuple[Any, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put((item, snapshot())):
                    return
            put((_DONE, None))
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, which raises it)
            put((_Failure(e), None))

    shown = snapshot()
    thread = threading.Thread(target=produce, name="s4mi-prefetch", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item, state = buffer.get()
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Failure):
                raise item.error
            shown = state
            show(state)
            yield item
    finally:
        stop.set()
        thread.join()
        if hasattr(source, "close"):
            source.close()
        show(None)
        if not finished:
            restore(shown)  # batches made ahead but never consumed are made again by the next iteration


class ResumableLoader:
    """A DataLoader whose passes are reproducible and which resumes exactly in the middle of a pass.

    Ignite's :class:`~ignite.engine.Engine` restarts the data iterator when a run is resumed mid-epoch, so a plain
    DataLoader would replay a different order with different augmentations. Here pass ``p`` is fixed by
    ``(seed, name, p)``: the sampler is reseeded (its ``generator``, or ``set_epoch(p)`` for a
    :class:`~torch.utils.data.distributed.DistributedSampler`), and each item's random transforms are reseeded
    from ``(seed, name, p, rank, position)`` before it is loaded, so augmentations do not depend on
    ``num_workers`` either. ``state_dict`` holds the pass and the number of batches already yielded from it; put
    the loader in the checkpoint's ``save_dict`` and the next ``iter`` after loading continues with the batch
    that comes next, skipping the consumed ones by index without loading them. (Ignite's ``DeterministicEngine``
    does a similar thing for Ignite's own RNGs but cannot reach the per-transform RandomStates MONAI uses.)

    Each pass builds a plain :class:`torch.utils.data.DataLoader` with the wrapped loader's dataset, collate
    function, workers and pinning; ``persistent_workers`` is not kept.

    Args:
        loader: a DataLoader over a map-style dataset.
        seed: the run seed.
        name: tells streams apart, so two loaders with the same seed draw different orders.
        prefetch: batches a background thread makes ahead of the training step (0: none), see :func:`prefetched`;
            the batches, their order and augmentations are the same (each item's transforms are reseeded).

    Raises:
        TypeError: for an iterable-style dataset, which cannot be indexed to skip batches.
    """

    def __init__(self, loader: DataLoader, seed: int = 0, name: str = "train", prefetch: int = 0) -> None:
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            raise TypeError(f"ResumableLoader {name!r} needs a DataLoader over a map-style dataset, got {loader!r}")
        if loader.batch_sampler is None:
            raise TypeError(f"ResumableLoader {name!r}: the DataLoader must batch (batch_size=None is not supported)")
        self.loader, self.seed, self.name = loader, int(seed), name
        self.prefetch = int(prefetch)
        self._shown: dict[str, int] | None = None  # the consumer's state while a prefetching iteration runs
        self._id = zlib.crc32(name.encode())
        self.pass_index = 0  # the pass in progress (or the next one to start)
        self.position = 0  # batches of that pass already yielded

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self) -> Any:
        return getattr(self.loader.batch_sampler, "sampler", self.loader.sampler)

    def _batches(self, pass_index: int) -> list[list[tuple[int, int]]]:
        sampler = self.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(pass_index)
        elif hasattr(sampler, "generator"):
            entropy = [self.seed, self._id, pass_index, _rank(), 0]
            # to int before the shift: numpy<2 (MONAI Label's environment) has no uint64 >> int
            seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]) >> 1
            sampler.generator = torch.Generator().manual_seed(seed)
        batches = [list(b) for b in self.loader.batch_sampler]  # type: ignore[union-attr]
        n_items = sum(len(b) for b in batches)
        item_seeds = iter(np.random.SeedSequence([self.seed, self._id, pass_index, _rank(), 1]).generate_state(n_items))
        return [[(int(i), int(next(item_seeds))) for i in b] for b in batches]

    def _pass_loader(self, batches: list[list[tuple[int, int]]]) -> DataLoader:
        dl = self.loader
        workers = dl.num_workers
        return DataLoader(
            _SeededItems(dl.dataset),
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=dl.collate_fn,
            pin_memory=dl.pin_memory,
            timeout=dl.timeout,
            worker_init_fn=dl.worker_init_fn,
            multiprocessing_context=dl.multiprocessing_context if workers else None,
            prefetch_factor=dl.prefetch_factor if workers else None,
            pin_memory_device=dl.pin_memory_device,
            # the iterator draws its base seed from this generator, not the global one: a resumed run creates
            # iterators at other moments than the uninterrupted run did, so global draws would shift dropout etc.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def __iter__(self) -> Iterator[Any]:
        if self.prefetch > 0:
            return prefetched(self._iterate(), self._live_state, self._show, self.load_state_dict, self.prefetch)
        return self._iterate()

    def _show(self, state: dict[str, int] | None) -> None:
        self._shown = state

    def _iterate(self) -> Iterator[Any]:
        batches = self._batches(self.pass_index)
        if self.position >= len(batches):  # saved right after the last batch of a pass
            self.pass_index, self.position = self.pass_index + 1, 0
            batches = self._batches(self.pass_index)
        if not batches:
            raise ValueError(f"ResumableLoader {self.name!r}: the loader yields no batch")
        for batch in self._pass_loader(batches[self.position :]):
            self.position += 1  # counted before the consumer sees the batch, so a checkpoint taken then includes it
            yield batch
        self.pass_index, self.position = self.pass_index + 1, 0

    def _live_state(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position, "seed": self.seed}

    def state_dict(self) -> dict[str, int]:
        return dict(self._shown) if self._shown is not None else self._live_state()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._shown = None
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"ResumableLoader {self.name!r}: the checkpoint was written with seed {state['seed']}, this run has "
                f"seed {self.seed}; resume with the same seed or start a new output folder"
            )
        self.pass_index, self.position = int(state["pass_index"]), int(state["position"])


class SemiSupervisedLoader:
    """Iterate a labelled and an unlabelled loader together: each item is ``{"labeled": batch, "unlabeled": batch}``.

    A MONAI workflow takes one data loader, so this joins the two streams, each with its own batch size, sampler
    and transforms. One epoch is ``epoch_length`` iterations, set by the labelled loader, the unlabelled loader, the
    longer of the two or an explicit count; the other stream is cycled (a new pass when exhausted, with ``set_epoch`` on a
    ``DistributedSampler`` so every pass is shuffled anew and in step across ranks).

    DataLoaders over map-style datasets are wrapped in :class:`ResumableLoader`: every pass's order and
    augmentations follow from ``seed``, and ``state_dict`` records where each stream and the epoch are, so a run
    resumed from an iteration checkpoint sees exactly the batches the uninterrupted run would have seen. Other
    iterables are cycled as they are (no exact resume).

    Args:
        labeled: loader of labelled batches.
        unlabeled: loader of unlabelled batches.
        epoch_length: ``"labeled"``, ``"unlabeled"``, ``"longer"`` (one pass over whichever loader has more batches:
            above 50 % labels, an ``"unlabeled"`` epoch is shorter than one pass over the labelled set, a
            ``"longer"`` one never is) or a number of iterations.
        seed: the run seed (the bundles pass their ``seed``).
        prefetch: pairs of batches a background thread makes ahead of the training step (0: none), see
            :func:`prefetched`.

    Raises:
        ValueError: when a loader is empty or ``epoch_length`` is not understood.
    """

    def __init__(
        self,
        labeled: Iterable,
        unlabeled: Iterable,
        epoch_length: str | int = "unlabeled",
        seed: int = 0,
        prefetch: int = 0,
    ) -> None:
        for name, loader in (("labeled", labeled), ("unlabeled", unlabeled)):
            if isinstance(loader, Sized) and len(loader) == 0:
                raise ValueError(f"SemiSupervisedLoader: the {name} loader is empty (no {name} items in the datalist?)")
        self.labeled, self.unlabeled = self._wrap(labeled, "labeled", seed), self._wrap(unlabeled, "unlabeled", seed)
        if epoch_length in ("labeled", "unlabeled", "longer"):
            sources = {"labeled": [labeled], "unlabeled": [unlabeled], "longer": [labeled, unlabeled]}[epoch_length]
            if not all(isinstance(source, Sized) for source in sources):
                need = (
                    "sized labeled and unlabeled loaders"
                    if epoch_length == "longer"
                    else f"a sized {epoch_length} loader"
                )
                raise ValueError(f"epoch_length={epoch_length!r} needs {need}")
            self.epoch_length = max(len(source) for source in sources)  # type: ignore[arg-type]
        elif isinstance(epoch_length, int) and epoch_length > 0:
            self.epoch_length = epoch_length
        else:
            raise ValueError(
                f"epoch_length must be 'labeled', 'unlabeled', 'longer' or a positive int, got {epoch_length!r}"
            )
        self.position = 0  # iterations of the current epoch already yielded
        self.prefetch = int(prefetch)
        self._shown: dict[str, Any] | None = None  # the consumer's state while a prefetching iteration runs
        self._passes = {"labeled": 0, "unlabeled": 0}  # for iterables that are not ResumableLoaders

    @staticmethod
    def _wrap(loader: Iterable, name: str, seed: int) -> Iterable:
        if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset) and loader.batch_sampler:
            return ResumableLoader(loader, seed=seed, name=name)
        return loader

    def __len__(self) -> int:
        return self.epoch_length

    def _cycle(self, name: str, loader: Iterable) -> Iterator[Any]:
        while True:
            sampler = getattr(loader, "sampler", None)
            if not isinstance(loader, ResumableLoader) and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self._passes[name])  # type: ignore[union-attr]
            self._passes[name] += 1
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"SemiSupervisedLoader: the {name} loader yielded no batch")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.prefetch > 0:
            return prefetched(self._iterate(), self._live_state, self._show, self.load_state_dict, self.prefetch)
        return self._iterate()

    def _show(self, state: dict[str, Any] | None) -> None:
        self._shown = state

    def _iterate(self) -> Iterator[dict[str, Any]]:
        if self.position >= self.epoch_length:
            self.position = 0
        lb, ulb = self._cycle("labeled", self.labeled), self._cycle("unlabeled", self.unlabeled)
        while self.position < self.epoch_length:
            batch = {"labeled": next(lb), "unlabeled": next(ulb)}
            self.position += 1
            yield batch
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return dict(self._shown) if self._shown is not None else self._live_state()

    def _live_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"position": self.position}
        for name in ("labeled", "unlabeled"):
            stream = getattr(self, name)
            if isinstance(stream, ResumableLoader):
                state[name] = stream.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._shown = None
        self.position = int(state["position"])
        for name in ("labeled", "unlabeled"):
            stream = getattr(self, name)
            if isinstance(stream, ResumableLoader) and name in state:
                stream.load_state_dict(state[name])
