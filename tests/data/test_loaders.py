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
