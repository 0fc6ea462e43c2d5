from __future__ import annotations

import torch
from monai.transforms import RandRotate90d

from s4mi.transforms import rot90_prob


def test_rot90_prob_only_on_square_planes() -> None:
    assert rot90_prob(0.5, [96, 96]) == 0.5
    assert rot90_prob(0.5, [208, 240]) == 0.0
    assert rot90_prob(0.5, [32, 32, 16]) == 0.5  # the rotated plane is square
    assert rot90_prob(0.5, [32, 32, 16], spatial_axes=(1, 2)) == 0.0


def test_rotation_with_that_prob_never_changes_a_non_square_shape() -> None:
    size = [6, 8]
    t = RandRotate90d("x", prob=rot90_prob(1.0, size), max_k=3)
    t.set_random_state(seed=0)
    assert all(t({"x": torch.zeros(1, *size)})["x"].shape == (1, *size) for _ in range(20))
