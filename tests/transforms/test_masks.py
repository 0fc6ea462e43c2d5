from __future__ import annotations

import numpy as np
import pytest
import torch

from s4mi.transforms import BinarizeMaskd


def test_rgb_jpeg_like_mask_becomes_binary_single_channel() -> None:
    m = torch.zeros(3, 4, 4)
    m[:, 1:3, 1:3] = 250.0
    m[:, 0, 0] = 20.0  # compression noise below the threshold
    out = BinarizeMaskd("label")({"label": m})["label"]
    assert out.shape == (1, 4, 4)
    assert out.sum() == 4 and set(out.unique().tolist()) == {0.0, 1.0}


def test_binary_mask_kept_and_numpy_supported() -> None:
    m = np.zeros((1, 3, 3), dtype=np.uint8)
    m[0, 1, 1] = 1
    out = BinarizeMaskd("label")({"label": m})["label"]
    assert out.dtype == np.float32 and out.sum() == 1


def test_channel_last_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="'label'.*channel-first"):
        BinarizeMaskd("label")({"label": torch.zeros(4, 4)})
