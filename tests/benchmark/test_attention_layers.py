"""benchmarks/attention_layers.py: the ceiling of a coarse Grad-CAM layer's share inside a mask, against a naive
bilinear upsampling written here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module():
    if str(BENCHMARKS) not in sys.path:  # it imports its sibling gradcam_overlays
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("attention_layers", BENCHMARKS / "attention_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


attention_layers = _module()


def _weights_1d(cells: int, size: int) -> np.ndarray:
    """(cells, size): how much each source cell contributes to each output pixel, half-pixel centres, edges clamped."""
    w = np.zeros((cells, size))
    for i in range(size):
        x = min(max((i + 0.5) * cells / size - 0.5, 0.0), cells - 1.0)
        lo = int(np.floor(x))
        hi = min(lo + 1, cells - 1)
        w[lo, i] += 1.0 - (x - lo)
        w[hi, i] += x - lo
    return w


@pytest.mark.parametrize("cells", [2, 4])
def test_ceiling_is_the_best_one_cell_share(cells: int) -> None:
    size = 16
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 1, size, size)) < 0.3).astype(np.float32)
    masks[0, 0, :, : size // 2] = 1  # a left half: the left cells see more of it
    masks[0, 0, :, size // 2 :] = 0
    w = _weights_1d(cells, size)
    best = []
    for m in masks[:, 0]:
        shares = [
            (np.outer(w[r], w[c]) * m).sum() / np.outer(w[r], w[c]).sum() for r in range(cells) for c in range(cells)
        ]
        best.append(max(shares))
    assert attention_layers.ceiling(torch.from_numpy(masks), cells) == pytest.approx(float(np.mean(best)), abs=1e-6)


def test_ceiling_of_a_full_mask_is_one_and_of_an_empty_mask_zero() -> None:
    assert attention_layers.ceiling(torch.ones(2, 1, 8, 8), 2) == pytest.approx(1.0)
    assert attention_layers.ceiling(torch.zeros(2, 1, 8, 8), 4) == 0.0
