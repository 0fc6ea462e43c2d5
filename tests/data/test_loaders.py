from __future__ import annotations

import pytest

from s4mi.data.loaders import epoch_sampler


def test_epoch_sampler_draws_fixed_count_reproducibly() -> None:
    data = list(range(7))
    assert epoch_sampler(data, None) is None and epoch_sampler(data, 0) is None
    a, b = list(epoch_sampler(data, 50, seed=3)), list(epoch_sampler(data, 50, seed=3))
    assert len(a) == 50 and a == b and set(a) <= set(data)
    assert a != list(epoch_sampler(data, 50, seed=4))


def test_epoch_sampler_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        epoch_sampler([], 10)
    with pytest.raises(ValueError, match="positive"):
        epoch_sampler([1], -1)


@pytest.mark.parametrize(("n", "batch_size"), [(225, 32), (64, 32), (10, 32), (1, 4)])
def test_full_batch_sampler_fills_every_batch_and_covers_the_set(n: int, batch_size: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    from s4mi.data.loaders import ResumableLoader, full_batch_sampler

    data = list(range(n))
    loader = ResumableLoader(
        DataLoader(data, batch_size=batch_size, sampler=full_batch_sampler(data, batch_size, seed=1)), seed=1
    )
    passes = [[int(i) for b in loader for i in b] for _ in range(3)]
    for items in passes:
        assert len(items) == -(-n // batch_size) * batch_size  # a whole number of batches per pass
        assert set(items) == set(data)  # every labelled item at least once per pass
        counts = torch.bincount(torch.tensor(items), minlength=n)
        assert int(counts.max() - counts.min()) <= 1  # without replacement: no item drawn twice before all once
    assert n == 1 or passes[0] != passes[1]  # reshuffled each pass
    assert all(len(b) == batch_size for b in loader)


def test_full_batch_sampler_errors() -> None:
    from s4mi.data.loaders import full_batch_sampler

    with pytest.raises(ValueError, match="empty"):
        full_batch_sampler([], 8)
    with pytest.raises(ValueError, match="batch_size"):
        full_batch_sampler([1], 0)


@pytest.mark.parametrize(
    ("n", "batch_size", "world"), [(225, 32, 2), (225, 32, 3), (64, 32, 2), (10, 32, 2), (1, 4, 3)]
)
def test_full_batch_sampler_gives_every_rank_whole_batches(n: int, batch_size: int, world: int) -> None:
    """Under torchrun each rank gets whole batches, and the ranks together cover the set in every pass."""
    import torch
    from torch.utils.data import DataLoader

    from s4mi.data.loaders import DistributedFullBatchSampler, ResumableLoader, full_batch_sampler

    data = list(range(n))
    loaders = []
    for rank in range(world):
        sampler = full_batch_sampler(data, batch_size, seed=3, num_replicas=world, rank=rank)
        assert isinstance(sampler, DistributedFullBatchSampler)
        loaders.append(ResumableLoader(DataLoader(data, batch_size=batch_size, sampler=sampler), seed=3))
    passes = []
    for _ in range(3):
        per_rank = [[[int(i) for i in b] for b in loader] for loader in loaders]
        sizes = {len(b) for batches in per_rank for b in batches}
        assert sizes == {batch_size}, f"batch sizes {sizes}"
        assert len({len(batches) for batches in per_rank}) == 1  # every rank takes the same number of steps
        items = [i for batches in per_rank for b in batches for i in b]
        assert set(items) == set(data)  # every labelled item at least once per pass, on some rank
        counts = torch.bincount(torch.tensor(items), minlength=n)
        assert int(counts.max() - counts.min()) <= 1  # no item twice before all once
        passes.append(items)
    assert n == 1 or passes[0] != passes[1]  # reshuffled each pass (set_epoch)


def test_full_batch_sampler_distributed_errors() -> None:
    from s4mi.data.loaders import full_batch_sampler

    with pytest.raises(ValueError, match="rank 2"):
        full_batch_sampler([1, 2], 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="rank -1"):
        full_batch_sampler([1, 2], 1, num_replicas=2, rank=-1)


def _augmented_loader(prefetch: int, fail_at: int | None = None):
    """A ResumableLoader over a MONAI Dataset with a random transform (reseeded per item by the loader)."""
    import numpy as np
    from monai.data import Dataset
    from monai.transforms import RandGaussianNoise
    from torch.utils.data import DataLoader

    from s4mi.data.loaders import ResumableLoader

    items = [np.full((1, 4, 4), float(i), dtype=np.float32) for i in range(10)]

    class Indexed(Dataset):
        def _transform(self, index):
            out = super()._transform(index)
            if fail_at is not None and index == fail_at:
                raise ValueError(f"broken image {fail_at}")
            return out

    ds = Indexed(items, transform=RandGaussianNoise(prob=1.0, std=0.1))
    return ResumableLoader(DataLoader(ds, batch_size=3, shuffle=True), seed=4, prefetch=prefetch)


@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetch_gives_the_same_batches_and_states(prefetch: int) -> None:
    """A background thread making batches ahead changes nothing the run sees: the batches (order and augmentation),
    and the loader's state after each consumed batch (what a checkpoint saves)."""
    import torch

    def record(loader, passes: int = 2):
        out = []
        for _ in range(passes):
            for b in loader:
                out.append((b.clone(), dict(loader.state_dict())))
        return out

    plain, ahead = record(_augmented_loader(0)), record(_augmented_loader(prefetch))
    assert len(plain) == len(ahead) == 8
    for (a, sa), (b, sb) in zip(plain, ahead, strict=True):
        assert torch.equal(a, b) and sa == sb


def test_prefetch_left_early_and_resumed_gives_what_comes_next() -> None:
    """An iteration left after 2 batches (the thread made more) and a checkpoint then: the next iteration, or a new
    loader restored from the checkpoint, goes on with batch 3, as without prefetching."""
    import torch

    want = [b.clone() for _ in range(2) for b in _augmented_loader(0)]
    loader = _augmented_loader(2)
    got = []
    for i, b in enumerate(loader):
        got.append(b.clone())
        if i == 1:
            break
    state = loader.state_dict()
    assert state["position"] == 2
    got += [b.clone() for b in loader]  # the rest of the first pass
    restored = _augmented_loader(2)
    restored.load_state_dict(state)
    again = [b.clone() for b in restored]
    assert all(torch.equal(a, b) for a, b in zip(got, want[:4], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(again, want[2:4], strict=True)) and len(again) == 2


def test_prefetch_raises_the_sources_error() -> None:
    """A broken item stops the run with its own error (MONAI's ThreadBuffer would end the pass quietly)."""
    with pytest.raises(ValueError, match="broken image"):
        for _ in _augmented_loader(2, fail_at=7):
            pass


def test_semi_supervised_loader_prefetch_matches() -> None:
    from torch.utils.data import DataLoader

    from s4mi.data.loaders import SemiSupervisedLoader

    def make(prefetch: int) -> SemiSupervisedLoader:
        lb = DataLoader(list(range(5)), batch_size=2, shuffle=True)
        ulb = DataLoader(list(range(100, 111)), batch_size=3, shuffle=True)
        return SemiSupervisedLoader(lb, ulb, "unlabeled", seed=2, prefetch=prefetch)

    runs = []
    for prefetch in (0, 2):
        loader, seen = make(prefetch), []
        for _ in range(2):
            seen += [(b["labeled"].tolist(), b["unlabeled"].tolist(), loader.state_dict()) for b in loader]
        runs.append(seen)
    assert runs[0] == runs[1] and len(runs[0]) == 8
