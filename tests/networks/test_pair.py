"""SegmentationPair: both outputs for training, one selected output (kept in the state dict) for everything else."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR, UNet

from s4mi.networks import SegmentationPair


def _pair(output: str = "cnn", seed: int = 0) -> SegmentationPair:
    torch.manual_seed(seed)
    cnn = torch.nn.Conv2d(2, 3, 3, padding=1)
    transformer = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    return SegmentationPair(cnn, transformer, output)


def test_outputs() -> None:
    pair = _pair()
    x = torch.randn(2, 2, 5, 5)
    a, b = pair(x, output="both")
    assert torch.equal(pair(x), a) and torch.equal(pair(x, output="cnn"), a)
    assert torch.equal(pair(x, output="transformer"), b)
    mean = (torch.softmax(a, 1) + torch.softmax(b, 1)) / 2
    m = pair(x, output="average")
    assert torch.allclose(torch.softmax(m, 1), mean, atol=1e-6) and torch.allclose(m.exp(), mean, atol=1e-6)
    with pytest.raises(ValueError, match="output must be one of"):
        pair(x, output="vit")
    with pytest.raises(ValueError, match="output must be one of"):
        SegmentationPair(pair.cnn, pair.transformer, "both")


@pytest.mark.parametrize("output", ["cnn", "transformer", "average"])
def test_view_state_dict_selects_the_output_at_load(output: str) -> None:
    pair = _pair()
    state = pair.view(output).state_dict()
    assert set(state) == set(pair.state_dict())
    fresh = _pair(seed=1)
    fresh.load_state_dict(state)
    x = torch.randn(1, 2, 4, 4)
    assert fresh.output == output and torch.allclose(fresh(x), pair(x, output=output))
    assert torch.allclose(pair.view(output)(x), pair(x, output=output))
    assert pair.output == "cnn", "saving a view leaves the training pair's default alone"


def test_param_groups_cover_both_networks() -> None:
    pair = _pair()
    groups = pair.param_groups(lr=0.1)
    assert [g["name"] for g in groups] == ["cnn", "transformer"] and all(g["lr"] == 0.1 for g in groups)
    held = {id(p) for g in groups for p in g["params"]}
    assert held == {id(p) for p in pair.parameters()}


@pytest.mark.parametrize("dims", [2, 3])
def test_monai_unet_and_swinunetr(dims: int) -> None:
    """MONAI's UNet and SwinUNETR in 2D and 3D, no downloaded weights; tracing (ckpt_export --use_trace) works."""
    size = (64, 64) if dims == 2 else (64, 64, 32)  # SwinUNETR: multiples of 32, more than one bottleneck voxel
    cnn = UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    transformer = SwinUNETR(in_channels=1, out_channels=2, spatial_dims=dims, feature_size=12, depths=(1, 1, 1, 1))
    pair = SegmentationPair(cnn, transformer, "transformer").eval()
    x = torch.randn(1, 1, *size)
    a, b = pair(x, output="both")
    assert a.shape == b.shape == (1, 2, *size)
    traced = torch.jit.trace(pair, x)
    assert torch.allclose(traced(x), b, atol=1e-4)
