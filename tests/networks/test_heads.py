from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import DenseNet121

from s4mi.networks import EncoderWithHead, ProjectionHead, backbone_state_dict_for_classifier, densenet_features

LEAKY = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
CLASSIFIER = {"class_layers.out.weight", "class_layers.out.bias"}


def tiny_images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def test_projection_head_shapes() -> None:
    head = ProjectionHead()
    assert [m.__class__.__name__ for m in head] == ["Linear", "ReLU", "Linear"]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (1024, 1024, 128)
    assert head(torch.randn(4, 1024)).shape == (4, 128)
    small = ProjectionHead(6, 5, 3, act=LEAKY)
    assert isinstance(small.act, torch.nn.LeakyReLU) and small.act.negative_slope == 0.1
    assert small(torch.randn(2, 6)).shape == (2, 3)


def test_encoder_with_any_backbone_normalises() -> None:
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
    x = torch.randn(3, 1, 4, 4)
    z = EncoderWithHead(backbone, ProjectionHead(8, 8, 4))(x)
    assert z.shape == (3, 4) and torch.allclose(z.norm(dim=1), torch.ones(3))
    raw = EncoderWithHead(backbone, ProjectionHead(8, 8, 4), normalize=False)(x)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(3))


def test_densenet_features_share_the_densenet() -> None:
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=6).eval()
    features = densenet_features(net)
    x = tiny_images()
    assert features.features is net.features
    pooled = features(x)
    assert pooled.shape == (2, 1024)
    with torch.no_grad():
        assert torch.allclose(net.class_layers[-1](pooled), net(x), atol=1e-6)
    assert set(net.state_dict()) - set(features.state_dict()) == CLASSIFIER
    with pytest.raises(TypeError, match="DenseNet"):
        densenet_features(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_leaky_relu_densenet_encoder_gives_unit_embeddings() -> None:
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=6, act=LEAKY)
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert acts and all(m.negative_slope == 0.1 for m in acts)
    assert not any(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert isinstance(net.class_layers.relu, torch.nn.LeakyReLU)
    encoder = EncoderWithHead(net, ProjectionHead(act=LEAKY))
    z = encoder(tiny_images())
    assert z.shape == (2, 128) and torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-6)
    assert not any(k.startswith("backbone.class_layers.out") for k in encoder.state_dict())


def test_backbone_state_loads_into_a_fresh_classifier(tmp_path: Path) -> None:
    encoder = EncoderWithHead(DenseNet121(spatial_dims=2, in_channels=1, out_channels=6, act=LEAKY), ProjectionHead())
    with torch.no_grad():  # stand-in for pretraining: weights and running statistics a fresh network cannot have
        for p in encoder.parameters():
            p.add_(0.01)
        encoder.train()(tiny_images(4))
    state = backbone_state_dict_for_classifier(torch.nn.DataParallel(encoder))
    assert not any(k.startswith(("head.", "fc1", "fc2")) for k in state)
    torch.save(state, tmp_path / "backbone.pt")
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)

    fresh = DenseNet121(spatial_dims=2, in_channels=1, out_channels=6, act=LEAKY)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert set(missing) == CLASSIFIER and unexpected == []
    loaded = fresh.state_dict()
    for k, v in encoder.backbone.state_dict().items():
        assert torch.equal(loaded[k], v), k
    fresh.eval(), encoder.eval()
    x = tiny_images()
    with torch.no_grad():
        assert torch.allclose(densenet_features(fresh)(x), encoder.backbone(x), atol=1e-6)


def test_backbone_state_needs_an_encoder() -> None:
    with pytest.raises(TypeError, match="EncoderWithHead"):
        backbone_state_dict_for_classifier(torch.nn.Linear(2, 2))


def test_projection_head_with_batch_norms_matches_a_naive_reference() -> None:
    """MoCo v3's projector: Linear -> BN -> act -> Linear -> BN without affine, checked against the formula."""
    torch.manual_seed(0)
    head = ProjectionHead(6, 5, 3, norm="batch", out_norm=("batch", {"affine": False})).train()
    assert list(dict(head.named_children())) == ["fc1", "norm", "act", "fc2", "out_norm"]
    assert head.fc1.bias is None and head.fc2.bias is None  # a bias before a BatchNorm is redundant
    assert head.out_norm.weight is None  # affine=False: the output is centred and scaled only
    with torch.no_grad():
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(8, 6)

    def bn(h: torch.Tensor) -> torch.Tensor:
        return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)

    h = torch.relu(bn(x @ head.fc1.weight.T) * head.norm.weight + head.norm.bias)
    expected = bn(h @ head.fc2.weight.T)
    out = head(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)  # no direction shared by the batch
    # the default stays MoCo v2 / S2MTS2's head, with biases and no normalisation
    plain = ProjectionHead(6, 5, 3)
    assert list(dict(plain.named_children())) == ["fc1", "act", "fc2"] and plain.fc1.bias is not None
