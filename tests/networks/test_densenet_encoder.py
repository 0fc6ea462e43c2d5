from __future__ import annotations

import importlib
import sys
import warnings

import pytest
import torch
from monai.networks.nets import DenseNet, FlexibleUNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexUNetEncoderRegister

import s4mi
import s4mi.networks
from s4mi.networks import DenseNetEncoder, EncoderWithHead, ProjectionHead, backbone_state_dict_for_classifier
from s4mi.networks.densenet_encoder import DENSENET_ENCODER_CONFIGS, register_densenet_encoders

# Worked out by hand from the DenseNet paper's rule (block i adds n_i * k channels, transitions halve), not from the
# code under test; the first three match segmentation_models.pytorch's DenseNet encoders.
EXPECTED_CHANNELS = {
    "densenet121": (64, 256, 512, 1024, 1024),
    "densenet169": (64, 256, 512, 1280, 1664),
    "densenet201": (64, 256, 512, 1792, 1920),
    "densenet-tiny": (16, 48, 56, 60, 62),
}
CLASSIFIER = {"class_layers.out.weight", "class_layers.out.bias"}


def images(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def run_unet(name: str, x: torch.Tensor, spatial_dims: int) -> tuple[FlexibleUNet, torch.Tensor, list[torch.Tensor]]:
    """A FlexibleUNet on ``name``, its output on ``x`` and the encoder's features from the same forward pass."""
    net = FlexibleUNet(in_channels=x.shape[1], out_channels=1, backbone=name, spatial_dims=spatial_dims)
    captured: list[torch.Tensor] = []
    net.encoder.register_forward_hook(lambda _m, _i, out: captured.extend(out))
    return net, net(x), captured


def check_features(name: str, features: list[torch.Tensor], x: torch.Tensor) -> None:
    channels = FLEXUNET_BACKBONE.register_dict[name]["feature_channel"]
    assert tuple(channels) == EXPECTED_CHANNELS[name]
    assert [f.shape[1] for f in features] == list(channels)
    size = x.shape[2:]
    for level, f in enumerate(features, start=1):
        assert f.shape[0] == x.shape[0]
        assert tuple(f.shape[2:]) == tuple(s // 2**level for s in size), (name, level, f.shape)


def test_registered_with_flexible_unet() -> None:
    for name, channels in EXPECTED_CHANNELS.items():
        entry = FLEXUNET_BACKBONE.register_dict[name]
        assert entry["type"] is DenseNetEncoder and entry["feature_number"] == 5
        assert tuple(entry["feature_channel"]) == channels
    assert DenseNetEncoder.get_encoder_names() == list(EXPECTED_CHANNELS)
    assert "resnet18" in FLEXUNET_BACKBONE.register_dict and "efficientnet-b0" in FLEXUNET_BACKBONE.register_dict


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201"])
def test_big_backbones_2d(name: str) -> None:
    x = images(1, 3, 64, 64)
    with torch.no_grad():
        net, y, features = run_unet(name, x, spatial_dims=2)
    assert y.shape == (1, 1, 64, 64)
    assert isinstance(net.encoder, DenseNetEncoder)
    check_features(name, features, x)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tiny_backbone_trains(spatial_dims: int) -> None:
    # batch 2: in 3D the stride-32 map of a 32^3 input is 1 voxel, and training-mode batch norm needs > 1 value
    x = images(2, 3, *([64, 64] if spatial_dims == 2 else [32, 32, 32]))
    net, y, features = run_unet("densenet-tiny", x, spatial_dims=spatial_dims)
    assert y.shape == (2, 1, *x.shape[2:])
    check_features("densenet-tiny", features, x)
    y.square().mean().backward()
    grad = net.encoder.features.conv0.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_in_channels_is_honoured() -> None:
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone="densenet-tiny", spatial_dims=2).eval()
    assert net.encoder.features.conv0.in_channels == 1
    with torch.no_grad():
        assert net(images(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_pretrained_raises() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet-tiny", pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights"):
        DenseNetEncoder(spatial_dims=2, in_channels=3, pretrained=True)
    # FlexibleUNet writes its arguments into the registry entry; a later plain call must still work
    FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet-tiny")


def test_it_is_monai_densenet() -> None:
    config = DENSENET_ENCODER_CONFIGS["densenet-tiny"]
    # out_channels=1: the encoder builds (then drops) a 1-output classifier, and the Linear's size changes how much
    # of the random stream is used before DenseNet's kaiming initialisation of the convolutions
    torch.manual_seed(0)
    dense = DenseNet(spatial_dims=2, in_channels=3, out_channels=1, **config)
    torch.manual_seed(0)
    encoder = DenseNetEncoder(spatial_dims=2, in_channels=3, **config)
    assert isinstance(encoder, DenseNet)

    # same modules under the same names: the DenseNet's state_dict minus its final Linear
    assert set(encoder.state_dict()) == set(dense.state_dict()) - CLASSIFIER
    # same initialisation from the same seed
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, dense.state_dict()[key]), key

    # the DenseNet's weights load with strict key checking, and then the deepest map is what its classifier pools
    dense = DenseNet(spatial_dims=2, in_channels=3, out_channels=5, **config).eval()
    features_sd = {k: v for k, v in dense.state_dict().items() if k.startswith("features.")}
    encoder.load_state_dict(features_sd, strict=True)
    encoder.eval()
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, dense.state_dict()[key]), key
    x = images(2, 3, 64, 64)
    with torch.no_grad():
        deepest = encoder(x)[-1]
        relu, linear = dense.get_submodule("class_layers.relu"), dense.get_submodule("class_layers.out")
        assert torch.allclose(deepest, relu(dense.features(x)))
        assert torch.allclose(linear(deepest.mean(dim=(2, 3))), dense(x), atol=1e-6)


def test_loads_an_s4mi_pretrained_densenet_backbone() -> None:
    config = DENSENET_ENCODER_CONFIGS["densenet-tiny"]
    pretrained = EncoderWithHead(DenseNet(2, 3, 5, **config), ProjectionHead(62, 32, 8))
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet-tiny")
    net.encoder.load_state_dict(backbone_state_dict_for_classifier(pretrained), strict=True)
    weight = "features.conv0.weight"
    assert torch.equal(net.encoder.get_parameter(weight), pretrained.backbone.get_parameter(weight))


def test_registration_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    # restore the registry, the module table and s4mi.networks afterwards, whatever happens
    monkeypatch.setattr(FLEXUNET_BACKBONE, "register_dict", dict(FLEXUNET_BACKBONE.register_dict))
    first = s4mi.networks
    monkeypatch.setattr(s4mi, "networks", first)
    names = sorted(FLEXUNET_BACKBONE.register_dict)

    importlib.import_module("s4mi.networks")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert register_densenet_encoders() is True
        # a real second import: run s4mi.networks and the encoder module again
        for module in ("s4mi.networks", "s4mi.networks.densenet_encoder"):
            monkeypatch.delitem(sys.modules, module)
        again = importlib.import_module("s4mi.networks")
    assert again is not first
    assert sorted(FLEXUNET_BACKBONE.register_dict) == names
    assert FLEXUNET_BACKBONE.register_dict["densenet-tiny"]["type"] is again.DenseNetEncoder
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet-tiny").eval()
    with torch.no_grad():
        assert net(images(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_foreign_names_are_not_overwritten() -> None:
    registry = FlexUNetEncoderRegister()
    registry.register_dict["densenet169"] = {"type": DenseNet, "feature_number": 5, "feature_channel": (1,) * 5}
    with pytest.warns(UserWarning, match="densenet169"):
        assert register_densenet_encoders(registry) is False
    assert list(registry.register_dict) == ["densenet169"] and registry.register_dict["densenet169"]["type"] is DenseNet
    fresh = FlexUNetEncoderRegister()
    assert register_densenet_encoders(fresh) is True and register_densenet_encoders(fresh) is True
    assert list(fresh.register_dict) == list(EXPECTED_CHANNELS)


def test_torchscript_export_and_four_blocks() -> None:
    """``monai.bundle ckpt_export`` scripts the network: the encoder must compile and give the same maps."""
    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet-tiny", spatial_dims=2).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match="four dense blocks"):
        DenseNetEncoder(spatial_dims=2, in_channels=3, block_config=(2, 2, 2))
