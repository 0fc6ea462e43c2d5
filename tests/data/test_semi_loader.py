from __future__ import annotations

import pytest
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from s4mi.data.loaders import SemiSupervisedLoader


def _loaders(n_lb: int = 4, n_ulb: int = 10, bs: int = 2) -> tuple[DataLoader, DataLoader]:
    lb = DataLoader([{"image": i, "label": i} for i in range(n_lb)], batch_size=bs)
    ulb = DataLoader([{"image": 100 + i} for i in range(n_ulb)], batch_size=bs)
    return lb, ulb


def test_epoch_by_unlabeled_cycles_labeled() -> None:
    lb, ulb = _loaders()
    loader = SemiSupervisedLoader(lb, ulb, "unlabeled")
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    assert [b["unlabeled"]["image"].tolist() for b in batches] == [[100 + 2 * i, 101 + 2 * i] for i in range(5)]
    assert [b["labeled"]["image"].tolist() for b in batches] == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]


def test_epoch_by_labeled_and_explicit() -> None:
    lb, ulb = _loaders()
    assert len(list(SemiSupervisedLoader(lb, ulb, "labeled"))) == 2
    assert len(list(SemiSupervisedLoader(lb, ulb, 7))) == 7


def test_set_epoch_called_on_each_pass() -> None:
    data = [{"image": i} for i in range(4)]
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    ulb = DataLoader(data, batch_size=2, sampler=sampler)
    lb, _ = _loaders(n_lb=2)
    loader = SemiSupervisedLoader(lb, ulb, 6)  # three passes over the unlabelled set
    list(loader)
    assert sampler.epoch == 2


def test_errors() -> None:
    lb, ulb = _loaders()
    with pytest.raises(ValueError, match="unlabeled loader is empty"):
        SemiSupervisedLoader(lb, DataLoader([], batch_size=2))
    with pytest.raises(ValueError, match="epoch_length"):
        SemiSupervisedLoader(lb, ulb, "both")


def test_epoch_by_longer_takes_the_larger_pass() -> None:
    """A label-fraction sweep: above 50 % labels the labelled pass is the longer one, and 'longer' follows it."""
    few, many = _loaders(n_lb=4, n_ulb=10)  # 2 labelled batches, 5 unlabelled
    assert len(SemiSupervisedLoader(few, many, "longer")) == len(list(SemiSupervisedLoader(few, many, "longer"))) == 5
    many, few = _loaders(n_lb=10, n_ulb=4)  # 5 labelled batches, 2 unlabelled
    batches = list(SemiSupervisedLoader(many, few, "longer"))
    assert len(batches) == 5
    assert [b["labeled"]["image"].tolist() for b in batches] == [[2 * i, 2 * i + 1] for i in range(5)]  # one pass
    assert [b["unlabeled"]["image"].tolist() for b in batches] == [[100, 101], [102, 103]] * 2 + [[100, 101]]


def test_epoch_by_longer_needs_sized_loaders() -> None:
    lb, _ = _loaders()
    with pytest.raises(ValueError, match="longer.*sized labeled and unlabeled"):
        SemiSupervisedLoader(lb, iter([{"image": 0}]), "longer")
