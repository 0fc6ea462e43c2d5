from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, LoadImaged, Orientationd, Resized, ScaleIntensityd, Spacingd
from PIL import Image
from torch import nn

from s4mi.handlers import PseudoLabelRenderer


def _net2d(in_ch: int = 3, out_ch: int = 1) -> nn.Sequential:
    """A tiny conv net whose train and eval outputs differ (BatchNorm, Dropout), so the mode matters."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(in_ch, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, out_ch, 1)
    )
    with torch.no_grad():
        bn = net[1]
        assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net


def _loader(images: torch.Tensor, batch_size: int = 3, shuffle: bool = False) -> DataLoader:
    items = [{"image": img, "ulb_index": i} for i, img in enumerate(images)]
    return DataLoader(Dataset(items), batch_size=batch_size, shuffle=shuffle, num_workers=0)


@torch.no_grad()
def _naive(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    net.eval()
    return torch.stack([torch.sigmoid(net(x[None]))[0] for x in images])


@pytest.mark.parametrize("max_device_bytes", [None, 0], ids=["device", "memmap"])
def test_render_lookup_matches_naive_loop(max_device_bytes: int | None) -> None:
    images = torch.rand(7, 3, 8, 6, generator=torch.Generator().manual_seed(1))
    net = _net2d()
    renderer = PseudoLabelRenderer(net, _loader(images, shuffle=True), max_device_bytes=max_device_bytes)
    renderer.render()
    assert renderer.on_device is (max_device_bytes is None)
    assert renderer.capacity == 7 and renderer.renders == 1 and renderer.last_render_s > 0
    order = torch.tensor([5, 0, 6, 2, 2, 1], dtype=torch.int32)
    expected = _naive(net, images)
    torch.testing.assert_close(renderer.lookup(order), expected[order.long()], rtol=1e-5, atol=1e-6)
    assert renderer.lookup([3]).shape == (1, 1, 8, 6)


def test_device_and_memmap_caches_agree_and_memmap_is_removed(tmp_path: Path) -> None:
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    net = _net2d()
    on_device = PseudoLabelRenderer(net, _loader(images))
    on_disk = PseudoLabelRenderer(net, _loader(images), max_device_bytes=0, cache_dir=str(tmp_path))
    on_device.render()
    on_disk.render()
    assert on_device.on_device and not on_disk.on_device
    assert len(list(tmp_path.glob("*.npy"))) == 1
    idx = torch.tensor([4, 1, 3, 0, 2])
    assert torch.equal(on_device.lookup(idx), on_disk.lookup(idx))
    on_disk.close()
    assert not list(tmp_path.glob("*.npy"))

    temp = PseudoLabelRenderer(net, _loader(images), max_device_bytes=0)
    temp.render()
    folder = temp.cache._tmpdir
    assert folder is not None and os.path.isdir(folder)
    del temp
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.parametrize("max_device_bytes", [None, 0], ids=["device", "memmap"])
def test_cache_grows_without_sized_dataset(max_device_bytes: int | None) -> None:
    images = torch.rand(9, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    order = [[0, 1], [2, 3], [8, 4], [5, 6], [7]]
    batches = [{"image": images[i], "ulb_index": torch.tensor(i)} for i in order]  # a plain list: no .dataset
    net = _net2d()
    renderer = PseudoLabelRenderer(net, batches, max_device_bytes=max_device_bytes, dtype=torch.float64)
    renderer.render()
    assert renderer.capacity >= 9
    expected = _naive(net, images).double()
    torch.testing.assert_close(renderer.lookup(torch.arange(9)), expected, rtol=1e-5, atol=1e-6)


def test_softmax_3d_sliding_window_matches_inferer_per_item() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 3, 1))
    images = torch.rand(4, 1, 12, 10, 9, generator=torch.Generator().manual_seed(4))
    inferer = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2, overlap=0.25)
    renderer = PseudoLabelRenderer(net, _loader(images, batch_size=2), inferer=inferer, activation="softmax")
    renderer.render()
    with torch.no_grad():
        expected = torch.cat([torch.softmax(torch.as_tensor(inferer(x[None], net)), dim=1) for x in images])
    got = renderer.lookup(torch.tensor([3, 1, 0, 2]))
    torch.testing.assert_close(got, expected[[3, 1, 0, 2]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(4, 12, 10, 9))
    conf = renderer.confidence(got)
    assert conf.shape == (4, 1, 12, 10, 9)
    torch.testing.assert_close(conf[:, 0], got.max(1).values)
    assert set(renderer.hard_label(got).unique().tolist()) <= {0, 1, 2}


def test_sigmoid_confidence_and_hard_label() -> None:
    renderer = PseudoLabelRenderer(nn.Identity(), [])
    p = torch.tensor([[[0.1, 0.5, 0.8]]])
    torch.testing.assert_close(renderer.confidence(p), torch.tensor([[[0.9, 0.5, 0.8]]]))
    assert renderer.hard_label(p).tolist() == [[[0, 0, 1]]] and renderer.hard_label(p).dtype == torch.uint8


def _set_head(net: nn.Sequential, value: float) -> None:
    head = net[-1]
    assert isinstance(head, nn.Conv2d)
    with torch.no_grad():
        head.weight.fill_(value)


def _weight_engine(net: nn.Sequential) -> Engine:
    """Two iterations per epoch; each epoch end sets the teacher's last conv weights to the epoch number."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _change_teacher(e: Engine) -> None:
        _set_head(net, float(e.state.epoch))

    return engine


def test_attached_renders_at_start_and_every_k_epochs() -> None:
    images = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(5))
    net = _net2d()
    renderer = PseudoLabelRenderer(net, _loader(images), every=2, unit="epoch")
    engine = _weight_engine(net)
    seen: dict[int, int] = {}
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.__setitem__(e.state.epoch, renderer.renders))
    renderer.attach(engine)
    engine.run([0, 1], max_epochs=5)
    assert renderer.renders == 3
    assert seen == {1: 1, 2: 1, 3: 2, 4: 2, 5: 3}
    # the last render came after epoch 4, whose end set the weights to 4; epoch 5 set them to 5 since
    cache = renderer.lookup(torch.arange(4))
    _set_head(net, 4.0)
    torch.testing.assert_close(cache, _naive(net, images))
    _set_head(net, 5.0)
    assert not torch.allclose(cache, _naive(net, images))


def test_attached_renders_on_resume_and_every_k_iterations() -> None:
    images = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(6))
    renderer = PseudoLabelRenderer(_net2d(), _loader(images), every=3, unit="iteration")
    engine = Engine(lambda e, b: None)
    renderer.attach(engine)
    engine.load_state_dict({"iteration": 4, "epoch_length": 2, "max_epochs": 5})  # resumed mid-way
    engine.run([0, 1])
    # 6 iterations left (5..10): the start, then after iterations 6 and 9 (iteration 12 would need a 13th)
    assert renderer.renders == 3


def test_lookup_errors() -> None:
    images = torch.rand(3, 3, 4, 4)
    renderer = PseudoLabelRenderer(_net2d(), _loader(images))
    with pytest.raises(RuntimeError, match="render"):
        renderer.lookup(torch.tensor([0]))
    renderer.render()
    with pytest.raises(IndexError, match="item index 3"):
        renderer.lookup(torch.tensor([1, 3]))
    with pytest.raises(IndexError, match="item index -1"):
        renderer.lookup(torch.tensor([-1]))
    with pytest.raises(TypeError):
        renderer.lookup(torch.tensor([0.0]))


def test_mixed_shapes_raise() -> None:
    batches = [
        {"image": torch.rand(2, 3, 4, 4), "ulb_index": torch.tensor([0, 1])},
        {"image": torch.rand(1, 3, 4, 6), "ulb_index": torch.tensor([2])},
    ]
    with pytest.raises(ValueError, match=r"item 2 .*\(1, 4, 6\).*\(1, 4, 4\)"):
        PseudoLabelRenderer(_net2d(), batches).render()


def test_teacher_mode_restored_and_no_grad() -> None:
    images = torch.rand(4, 3, 4, 4)
    net = _net2d()
    net.train()
    grad_enabled: list[bool] = []
    net.register_forward_hook(lambda m, i, o: grad_enabled.append(torch.is_grad_enabled() or m.training))
    renderer = PseudoLabelRenderer(net, _loader(images), write_dir=None)
    renderer.render()
    assert net.training and all(m.training for m in net.modules())
    assert grad_enabled and not any(grad_enabled)
    assert all(p.grad is None for p in net.parameters())
    assert not renderer.lookup(torch.arange(4)).requires_grad

    net.eval()
    renderer.render()
    assert not net.training


def _nifti_volumes(folder: Path) -> tuple[list[str], list[np.ndarray], list[tuple[int, int, int]]]:
    affines = [
        np.array([[-1.5, 0, 0, 20.0], [0, 0.8, 0, -7.5], [0, 0, 2.0, 3.0], [0, 0, 0, 1]]),
        np.array([[1.5, 0, 0, -4.0], [0, -0.8, 0, 11.0], [0, 0, 2.0, -6.0], [0, 0, 0, 1]]),
        np.array([[1.5, 0, 0, 0.5], [0, 0.8, 0, 0.25], [0, 0, -2.0, 9.0], [0, 0, 0, 1]]),
    ]
    shapes = [(14, 22, 9), (13, 20, 8), (15, 21, 10)]
    rng = np.random.default_rng(0)
    paths = []
    for i, (affine, shape) in enumerate(zip(affines, shapes, strict=True)):
        path = folder / f"case_{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), affine), path)
        paths.append(str(path))
    return paths, affines, shapes


@pytest.mark.parametrize(
    ("resize", "activation", "out_ch"),
    [("spacing", "sigmoid", 1), ("resize", "softmax", 3)],
)
def test_nifti_write_back_keeps_source_geometry(
    tmp_path: Path, resize: str, activation: Literal["sigmoid", "softmax"], out_ch: int
) -> None:
    paths, affines, shapes = _nifti_volumes(tmp_path)
    spatial = (
        Spacingd("image", pixdim=(2.0, 2.0, 2.0), mode="bilinear")
        if resize == "spacing"
        else Resized("image", spatial_size=(16, 16, 8))
    )
    preprocess = Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            Orientationd("image", axcodes="RAS"),
            ScaleIntensityd("image"),
            spatial,
            Resized("image", spatial_size=(12, 12, 6)),  # Spacingd alone gives each volume its own shape
        ]
    )
    items = [{"image": p, "ulb_index": i} for i, p in enumerate(paths)]
    loader = DataLoader(Dataset(items, transform=preprocess), batch_size=2, num_workers=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, out_ch, 1))
    renderer = PseudoLabelRenderer(net, loader, activation=activation)
    renderer.render()
    assert renderer.lookup(torch.tensor([2, 0])).shape == (2, out_ch, 12, 12, 6)

    out = tmp_path / "out"
    written = renderer.write(str(out))
    assert [Path(p).name for p in written] == [
        name for i in range(3) for name in (f"case_{i}_pseudo.nii.gz", f"case_{i}_confidence.nii.gz")
    ]
    for i in range(3):
        for kind in ("pseudo", "confidence"):
            img = nib.load(out / f"case_{i}_{kind}.nii.gz")
            assert isinstance(img, nib.Nifti1Image)
            np.testing.assert_allclose(img.affine, affines[i], atol=1e-4)
            assert img.shape == shapes[i]
            data = np.asarray(img.dataobj)
            if kind == "pseudo":
                assert data.dtype == np.uint8
                assert set(np.unique(data)) <= set(range(out_ch if activation == "softmax" else 2))
            else:
                assert data.dtype == np.float32
                low = 0.5 if activation == "sigmoid" else 1.0 / out_ch
                assert data.min() >= low - 1e-5 and data.max() <= 1.0 + 1e-5


def test_png_write_back_keeps_source_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        path = tmp_path / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), mode="RGB").save(path)  # 40 wide, 30 high
        paths.append(str(path))
    preprocess = Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            ScaleIntensityd("image"),
            Resized("image", spatial_size=(32, 32)),
        ]
    )
    loader = DataLoader(
        Dataset([{"image": p, "ulb_index": i} for i, p in enumerate(paths)], transform=preprocess), batch_size=2
    )
    renderer = PseudoLabelRenderer(_net2d(), loader, write_dir=str(tmp_path / "out"))
    engine = Engine(lambda e, b: None)
    renderer.attach(engine)
    engine.run([0], max_epochs=1)
    for i in range(3):
        for kind in ("pseudo", "confidence"):
            written = tmp_path / "out" / f"img_{i}_{kind}.png"
            with Image.open(written) as img:
                assert img.size == (40, 30)
                data = np.asarray(img)
            assert data.dtype == np.uint8
            if kind == "pseudo":
                assert set(np.unique(data)) <= {0, 1}
            else:
                assert data.min() >= 127


def test_bfloat16_memmap_matches_device_cache() -> None:
    images = torch.rand(5, 3, 6, 6, generator=torch.Generator().manual_seed(7))
    net = _net2d()
    caches = [PseudoLabelRenderer(net, _loader(images), dtype=torch.bfloat16, max_device_bytes=b) for b in (None, 0)]
    for c in caches:
        c.render()
    idx = torch.tensor([3, 0, 4])
    a, b = (c.lookup(idx) for c in caches)
    assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b)
    torch.testing.assert_close(a.float(), _naive(net, images)[idx], atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("max_device_bytes", [None, 0], ids=["device", "memmap"])
def test_cuda_cache_and_amp(max_device_bytes: int | None) -> None:
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    net = _net2d()
    expected = _naive(net, images)
    net.cuda()
    renderer = PseudoLabelRenderer(net, _loader(images), amp=True, max_device_bytes=max_device_bytes)
    renderer.render()
    assert renderer.on_device is (max_device_bytes is None)
    got = renderer.lookup(torch.tensor([5, 1, 2], device="cuda"))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected[[5, 1, 2]], atol=5e-3, rtol=5e-3)
