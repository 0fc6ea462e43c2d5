"""DINO's networks: crops of any size through the ViT, the head's normalisations, the multi-crop wrapper."""

from __future__ import annotations

import pytest
import torch

from s4mi.networks.dino import CropViT, DINOHead, MultiCropWrapper


def _vit() -> CropViT:
    torch.manual_seed(0)
    return CropViT(in_channels=3, img_size=32, patch_size=8, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4)


def test_vit_takes_global_and_local_crops() -> None:
    vit = _vit().eval()
    assert vit(torch.rand(2, 3, 32, 32)).shape == (2, 32)
    assert vit(torch.rand(2, 3, 16, 16)).shape == (2, 32)  # a local crop: position embeddings resized
    assert torch.equal(vit.position_embedding(4, 4), vit.pos_embed)
    with pytest.raises(ValueError, match="multiples of 8"):
        vit(torch.rand(1, 3, 20, 20))


def test_every_trainable_vit_parameter_gets_a_gradient() -> None:
    """DDP without find_unused_parameters fails at the second step when a trainable parameter gets no gradient."""
    vit = _vit()
    (vit(torch.rand(2, 3, 32, 32)).sum() + vit(torch.rand(2, 3, 16, 16)).sum()).backward()
    unused = [n for n, p in vit.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    frozen = sorted(n for n, p in vit.named_parameters() if not p.requires_grad)
    assert frozen == [
        "blocks.0.norm_cross_attn.bias",
        "blocks.0.norm_cross_attn.weight",
        "blocks.1.norm_cross_attn.bias",
        "blocks.1.norm_cross_attn.weight",
        "patch_embedding.position_embeddings",
    ]


def test_head_is_l2_bottlenecked_and_weight_normalised() -> None:
    head = DINOHead(32, 10, hidden_dim=16, bottleneck_dim=8)
    v = head.last_layer.parametrizations.weight.original1  # direction
    # each prototype's weight has norm g = 1, and g is frozen with norm_last_layer
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(10), atol=1e-6)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    assert v.requires_grad
    # outputs are cosine similarities to the prototypes: bounded by 1
    assert head(torch.randn(5, 32) * 100).abs().max() <= 1.0 + 1e-5
    assert DINOHead(32, 10, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def test_multicrop_wrapper_matches_one_forward_per_crop() -> None:
    net = MultiCropWrapper(_vit(), DINOHead(32, 10, hidden_dim=16, bottleneck_dim=8)).eval()
    crops = [torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 16, 16)]
    outs = net(crops)
    assert [o.shape for o in outs] == [(2, 10)] * 3
    for crop, out in zip(crops, outs, strict=True):
        assert torch.allclose(net.head(net.backbone(crop)), out, atol=1e-5)


def test_vit_classifier_loads_a_dino_backbone_and_scripts(tmp_path) -> None:
    """The teacher's ViT saved by the DINO pretraining loads into the fine-tuning ViTClassifier (only ``head.*``
    left at its initialisation), gives the same features, and TorchScript compiles it (ckpt_export)."""
    from s4mi.handlers import load_pretrained_backbone, save_pretrained_backbone
    from s4mi.handlers.probe import backbone_features
    from s4mi.networks import ViTClassifier, backbone_state_dict_for_classifier

    kw = {"img_size": 16, "patch_size": 8, "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}
    torch.manual_seed(0)
    teacher = MultiCropWrapper(CropViT(in_channels=1, **kw), DINOHead(16, 12, hidden_dim=16, bottleneck_dim=8))
    assert set(backbone_state_dict_for_classifier(teacher)) == set(teacher.backbone.state_dict())
    path = save_pretrained_backbone(teacher, tmp_path / "pretrained.pt")
    torch.manual_seed(1)
    clf = ViTClassifier(in_channels=1, out_channels=3, **kw).eval()
    left = load_pretrained_backbone(clf, path, exclude=("head.",))
    assert sorted(left) == ["head.bias", "head.weight"]
    x = torch.rand(2, 1, 16, 16)
    teacher.eval()
    assert torch.equal(clf.features(x), teacher.backbone(x))
    assert torch.equal(backbone_features(clf)(x), clf.features(x))
    assert torch.equal(backbone_features(teacher)(x), teacher.backbone(x))
    scripted = torch.jit.script(clf)
    assert torch.allclose(scripted(x), clf(x)) and clf(x).shape == (2, 3)
