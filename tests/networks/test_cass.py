"""CASSPair: both networks on one image, parameter groups, and backbone weights keyed for fine-tuning."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet

from s4mi.losses import CASSLoss
from s4mi.networks import CASSPair, CropViT, ProjectionHead


def _densenet(out_channels: int = 3) -> DenseNet:
    return DenseNet(
        spatial_dims=2, in_channels=1, out_channels=out_channels, init_features=8, growth_rate=4, block_config=(2, 2)
    )


def _vit() -> CropViT:
    return CropViT(in_channels=1, img_size=16, patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)


def _pair() -> CASSPair:
    torch.manual_seed(0)
    densenet = _densenet()
    features = densenet.class_layers.out.in_features
    return CASSPair(densenet, _vit(), torch.nn.Linear(features, 6), ProjectionHead(16, 8, 6))


def test_same_image_to_both_networks_through_their_heads() -> None:
    pair = _pair().eval()
    x = torch.rand(3, 1, 16, 16)
    cnn_out, vit_out = pair(x)
    assert cnn_out.shape == vit_out.shape == (3, 6)
    assert torch.equal(cnn_out, pair.cnn_head(pair.cnn(x)))
    assert torch.equal(vit_out, pair.vit_head(pair.vit(x)))
    assert not any(name.startswith("cnn.class_layers.out") for name in pair.state_dict())  # classifier dropped


def test_every_trainable_parameter_gets_a_gradient() -> None:
    """Both networks learn from the loss (and DDP needs no find_unused_parameters)."""
    pair = _pair()
    CASSLoss()(*pair(torch.rand(4, 1, 16, 16))).backward()
    assert [n for n, p in pair.named_parameters() if p.requires_grad and p.grad is None] == []
    assert all(
        p.grad.abs().sum() > 0
        for n, p in pair.named_parameters()
        if n.startswith(("cnn.", "vit.")) and p.grad is not None
    )


def test_param_groups_split_the_networks() -> None:
    pair = _pair()
    groups = pair.param_groups(vit={"lr": 0.5})
    assert [g["name"] for g in groups] == ["cnn", "vit"]
    ids = [{id(p) for p in g["params"]} for g in groups]
    cnn = {id(p) for m in (pair.cnn, pair.cnn_head) for p in m.parameters() if p.requires_grad}
    vit = {id(p) for m in (pair.vit, pair.vit_head) for p in m.parameters() if p.requires_grad}
    assert ids == [cnn, vit] and not cnn & vit
    assert ids[0] | ids[1] == {id(p) for p in pair.parameters() if p.requires_grad}
    assert groups[1]["lr"] == 0.5 and "lr" not in groups[0]


def test_one_adam_over_two_groups_steps_like_cass_two_adams() -> None:
    """CASS's code keeps one Adam per network; Adam is per parameter, so one Adam over the two groups is the same."""
    one, two = _pair(), _pair()
    opt_one = torch.optim.Adam(one.param_groups(), lr=1e-2)
    opt_cnn = torch.optim.Adam([*two.cnn.parameters(), *two.cnn_head.parameters()], lr=1e-2)
    opt_vit = torch.optim.Adam([p for m in (two.vit, two.vit_head) for p in m.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.rand(4, 1, 16, 16, generator=g)
        for net, opts in ((one, [opt_one]), (two, [opt_cnn, opt_vit])):
            for opt in opts:
                opt.zero_grad()
            CASSLoss()(*net(x)).backward()
            for opt in opts:
                opt.step()
    for (k, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_backbone_weights_load_into_the_classifiers() -> None:
    pair = _pair()
    with torch.no_grad():  # weights unlike a fresh network's, to see they arrive
        for p in pair.parameters():
            p.add_(0.01)
    classifier = _densenet(out_channels=5)
    missing, unexpected = classifier.load_state_dict(pair.cnn_state_dict(), strict=False)
    assert sorted(missing) == ["class_layers.out.bias", "class_layers.out.weight"] and unexpected == []
    assert torch.equal(classifier.features.conv0.weight, pair.cnn.features.conv0.weight)
    vit = _vit()
    vit.load_state_dict(pair.vit_state_dict())  # strict: CropViT's own keys
    assert torch.equal(vit.pos_embed, pair.vit.pos_embed)
    assert not any(
        k.startswith(("cnn_head", "vit_head", "head")) for k in (*pair.cnn_state_dict(), *pair.vit_state_dict())
    )


def test_any_feature_cnn_keeps_its_keys() -> None:
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pair = CASSPair(cnn, _vit(), torch.nn.Linear(4, 6), torch.nn.Linear(16, 6))
    assert pair.cnn_state_dict().keys() == cnn.state_dict().keys()
    assert pair(torch.rand(2, 1, 16, 16))[0].shape == (2, 6)
