"""capture_outputs: a layer's output recorded in the forward that gives the logits, through wrappers."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet

from s4mi.networks import DENSENET_PENULTIMATE, capture_outputs, densenet_features, unwrap_network


def _densenet() -> DenseNet:
    torch.manual_seed(0)
    return DenseNet(spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(2, 2))


def test_penultimate_features_of_a_monai_densenet_in_one_forward() -> None:
    net = _densenet().eval()
    x = torch.rand(5, 1, 16, 16)
    with capture_outputs(net, DENSENET_PENULTIMATE) as feats:
        logits = net(x)
    (a,) = feats
    assert a.shape == (5, net.class_layers.out.in_features)
    assert torch.allclose(a, densenet_features(net)(x))  # the pooled features
    assert torch.allclose(net.class_layers.out(a), logits)  # the ones the logits came from
    assert a.requires_grad  # a loss on them trains the network


def test_one_entry_per_forward_and_the_hook_is_removed() -> None:
    net = _densenet().eval()
    with capture_outputs(net, DENSENET_PENULTIMATE) as feats:
        net(torch.rand(2, 1, 16, 16))
        net(torch.rand(3, 1, 16, 16))
    assert [f.shape[0] for f in feats] == [2, 3]
    net(torch.rand(4, 1, 16, 16))
    assert len(feats) == 2 and not net.class_layers.flatten._forward_hooks


def test_through_a_data_parallel_wrapper_and_a_clear_error_for_a_wrong_layer() -> None:
    net = _densenet()
    wrapped = torch.nn.DataParallel(net)
    assert unwrap_network(wrapped) is net
    with capture_outputs(wrapped, DENSENET_PENULTIMATE) as feats:
        wrapped(torch.rand(2, 1, 16, 16))
    assert feats[0].shape == (2, net.class_layers.out.in_features)
    with pytest.raises(AttributeError, match="nope"), capture_outputs(net, "class_layers.nope"):
        pass
