"""A network's intermediate output from the same forward that gives its prediction, by a forward hook.

SRC-MT and SRCL need a classifier's penultimate features (pooled, ``B D``) *and* its logits for the same images,
from one forward. MONAI's DenseNet computes both in ``forward`` (``features`` then ``class_layers``: ReLU, pooling,
flatten, Linear) but returns only the logits; running its submodules by hand would give both, but not through a
``DistributedDataParallel`` wrapper (whose ``forward`` arms the gradient all-reduce) nor an inferer. A forward hook
on the layer whose output is wanted (``class_layers.flatten`` for a MONAI DenseNet) records it while the network runs
as it always does, so the network stays a plain MONAI DenseNet (its ``state_dict``, ``inference.json`` and
``models/model.pt`` are unchanged) and the recorded tensor carries its gradient history. The hook is added for the
``with`` block only, so copies of the network (an EMA teacher) carry none; under ``torch.compile`` a hook added per
step makes Dynamo retrace, so feature capture is meant for eager networks (no s4mi bundle compiles).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["DENSENET_PENULTIMATE", "capture_outputs", "unwrap_network"]

DENSENET_PENULTIMATE = "class_layers.flatten"
"""The layer of a MONAI :class:`~monai.networks.nets.DenseNet` whose output is the pooled features, ``B x 1024`` for
DenseNet-121: SRC-MT's "activations" (the authors' code pools ``relu(features(x))``, as MONAI's class layers do)."""


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside ``DataParallel``/``DistributedDataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        elif isinstance(inner := getattr(network, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            network = inner
        else:
            return network


@contextmanager
def capture_outputs(network: nn.Module, layer: str) -> Iterator[list[torch.Tensor]]:
    """Record the output of ``network``'s submodule ``layer`` at every forward run inside the ``with`` block.

    Example:
        .. code-block:: python

            with capture_outputs(model, DENSENET_PENULTIMATE) as feats:
                logits = model(x)  # one forward, through any DDP wrapper or inferer
            (a,) = feats  # B x 1024, with its graph: a loss on it trains the model

    Args:
        network: the network (wrappers are looked through, see :func:`unwrap_network`).
        layer: the submodule's dotted name in the unwrapped network (``nn.Module.get_submodule``).

    Yields:
        a list that gets the layer's output, flattened to ``B x D``, once per forward of the layer (in order: a
        joint forward gives one tensor, two forwards two).

    Raises:
        AttributeError: the network has no such submodule (the message names it).
    """
    module = unwrap_network(network).get_submodule(layer)
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> None:
        outputs.append(output.flatten(1))

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()
