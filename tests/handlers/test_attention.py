"""Grad-CAM attention inside a mask: the share against hand-computed maps and masks, the maps against a naive Grad-CAM
run one image at a time, and the handler's metric and per-image file."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine

from s4mi.handlers import AttentionInMask, attention_share, grad_cam
from tests.engines.test_src_mt import densenet


def test_share_against_hand_computed_maps() -> None:
    cam = torch.tensor([[[[1.0, 3.0], [0.0, -2.0]]], [[[2.0, 2.0], [2.0, 2.0]]], [[[0.0, 0.0], [-1.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [1.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    share = attention_share(cam, mask)
    # image 0: positive mass 1 + 3 = 4, inside the mask 1 (the negative pixel counts nothing); image 1: 6 of 8;
    # image 2: no positive mass at all
    assert share[:2].tolist() == pytest.approx([0.25, 0.75])
    assert math.isnan(share[2].item())
    with pytest.raises(ValueError, match="differs from the mask"):
        attention_share(cam, mask[:, :, :1])


def _naive_grad_cam(net: torch.nn.Module, x: torch.Tensor, layer: str, c: int) -> torch.Tensor:
    """Grad-CAM of one image, written out: the layer's activations A and the gradient of logit c with respect to
    them, channel weights the spatial mean of the gradient, ReLU of the weighted sum, bilinear to the image size."""
    store: dict[str, torch.Tensor] = {}
    module = net.get_submodule(layer)
    inplace = getattr(module, "inplace", False)
    if inplace:
        module.inplace = False
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    net.eval()
    logits = net(x[None])
    handle.remove()
    (grad,) = torch.autograd.grad(logits[0, c], store["a"])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * store["a"]).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0].detach()


def _fit(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 40) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("layer", ["class_layers.relu", "features.denseblock2"])
def test_grad_cam_explains_each_image_by_its_own_top_class(layer: str) -> None:
    torch.manual_seed(0)
    net = densenet()
    x = torch.rand(6, 1, 16, 16)
    _fit(net, x, torch.arange(6) % 3)  # an untrained net gives every image the same top class
    maps, cls = grad_cam(net, x, layer)
    with torch.no_grad():
        net.eval()
        assert cls.tolist() == net(x).argmax(1).tolist()
    assert len(set(cls.tolist())) > 1, "the batch should hold several top classes to test the split by class"
    for i in range(6):
        want = _naive_grad_cam(net, x[i], layer, int(cls[i]))
        torch.testing.assert_close(maps[i], want, rtol=1e-4, atol=1e-6)
    # a chosen class is explained as asked
    maps_0, cls_0 = grad_cam(net, x, layer, class_idx=torch.zeros(6, dtype=torch.long))
    assert cls_0.tolist() == [0] * 6
    torch.testing.assert_close(maps_0[1], _naive_grad_cam(net, x[1], layer, 0), rtol=1e-4, atol=1e-6)


def test_handler_writes_the_mean_share_and_a_row_per_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = densenet()
    images = torch.rand(5, 1, 16, 16)
    _fit(net, images, torch.arange(5) % 3)
    masks = torch.zeros(5, 1, 16, 16)
    masks[:, :, 4:12, 2:8] = 1
    loader = [{"image": images[:3], "mask": masks[:3]}, {"image": images[3:], "mask": masks[3:]}]
    handler = AttentionInMask(net, loader, name="val_attention_in_lung", folder=tmp_path, file_name="att.csv")
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    maps, _ = grad_cam(net, images, "class_layers.relu")
    want = attention_share(maps, masks)
    assert torch.isfinite(want).sum() >= 3, want
    assert engine.state.metrics["val_attention_in_lung"] == pytest.approx(want.nanmean().item(), rel=1e-5)
    with open(tmp_path / "att.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert [float(r["share"]) for r in rows] == pytest.approx(want.tolist(), rel=1e-5, nan_ok=True)
    assert all(float(r["mask_area"]) == pytest.approx(48 / 256) for r in rows)
    with pytest.raises(KeyError, match="lacks 'image' or 'mask'"):
        AttentionInMask(net, [{"image": images}]).compute("cpu")
