"""Projection heads for contrastive pretraining, and a backbone + head wrapper whose backbone goes back to MONAI.

MoCo v2 (Chen et al., arXiv 2003.04297) and S2MTS2 (Liu et al., MLMI 2021) put a 2-layer MLP head on the pooled
backbone features during pretraining and drop it for fine-tuning. S2MTS2 uses a DenseNet-121 with LeakyReLU 0.1
and a 1024 -> 1024 -> 128 head. MONAI's DenseNet builds that backbone directly::

    act = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
    DenseNet121(spatial_dims=2, in_channels=1, out_channels=14, act=act)

(the ``act`` argument reaches every activation, including ``class_layers.relu``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets import DenseNet
from torch import nn

__all__ = ["ProjectionHead", "EncoderWithHead", "densenet_features", "backbone_state_dict_for_classifier"]

# The final Linear of MONAI's DenseNet, the only DenseNet key a features-only backbone lacks.
_DENSENET_CLASSIFIER = "class_layers.out."


class ProjectionHead(nn.Sequential):
    """MoCo v2's projection head: ``Linear -> activation -> Linear`` (S2MTS2: 1024 -> 1024 -> 128).

    Args:
        in_features: backbone feature size (1024 for DenseNet-121).
        hidden_features: hidden layer size.
        out_features: embedding size ``D`` (the queue's key dimension).
        act: activation, a name or ``(name, kwargs)`` for :func:`monai.networks.layers.utils.get_act_layer`.
        norm: optional normalisation after the hidden Linear, a name or ``(name, kwargs)`` for
            :func:`monai.networks.layers.utils.get_norm_layer` (1D), e.g. ``"batch"``: the head of SimCLR and
            MoCo v3. None (the default) is MoCo v2's and S2MTS2's head.
        out_norm: optional normalisation of the output, e.g. ``("batch", {"affine": False})`` as in MoCo v3's
            projector. It centres the embeddings over the batch before they are L2-normalised, removing the
            direction all images share. Without it a MoCo queue can be "solved" by moving that shared direction
            (the queue's older keys then look unlike every current query) instead of telling images apart. On the
            chest phantoms, whose images share one anatomy, S2MTS2's head without it collapses
            (benchmarks/README.md, "S2MTS2").
    """

    def __init__(
        self,
        in_features: int = 1024,
        hidden_features: int = 1024,
        out_features: int = 128,
        act: str | tuple = "relu",
        norm: str | tuple | None = None,
        out_norm: str | tuple | None = None,
    ) -> None:
        layers: list[tuple[str, nn.Module]] = [("fc1", nn.Linear(in_features, hidden_features, bias=norm is None))]
        if norm is not None:
            layers.append(("norm", get_norm_layer(norm, spatial_dims=1, channels=hidden_features)))
        layers += [
            ("act", get_act_layer(act)),
            ("fc2", nn.Linear(hidden_features, out_features, bias=out_norm is None)),
        ]
        if out_norm is not None:
            layers.append(("out_norm", get_norm_layer(out_norm, spatial_dims=1, channels=out_features)))
        super().__init__(OrderedDict(layers))


def densenet_features(densenet: DenseNet) -> nn.Sequential:
    """The pooled features of a MONAI DenseNet, ``B x C`` (1024 for DenseNet-121), sharing its modules.

    ``densenet.features`` then ``densenet.class_layers`` without its final Linear (activation, adaptive average
    pooling, flatten). Submodules keep their DenseNet names (``features.*``, ``class_layers.relu`` ...), so this
    module's ``state_dict`` is the DenseNet's minus ``class_layers.out.*`` and loads back into a fresh DenseNet
    of the same architecture with ``strict=False`` (see :func:`backbone_state_dict_for_classifier`). The
    modules are shared, not copied: training this trains ``densenet`` too.

    Args:
        densenet: any :class:`monai.networks.nets.DenseNet` (``DenseNet121``, ``DenseNet169`` ...).

    Returns:
        an ``nn.Sequential`` mapping ``B x C_in x H x W[ x D]`` to ``B x C``.

    Raises:
        TypeError: if ``densenet`` is not a MONAI DenseNet.
    """
    if not isinstance(densenet, DenseNet):
        raise TypeError(f"expected a monai.networks.nets.DenseNet, got {type(densenet).__name__}")
    pooled = OrderedDict((name, module) for name, module in densenet.class_layers.named_children() if name != "out")
    return nn.Sequential(OrderedDict([("features", densenet.features), ("class_layers", nn.Sequential(pooled))]))


class EncoderWithHead(nn.Module):
    """A backbone and a projection head, returning L2-normalised embeddings: a MoCo query or key encoder.

    A MONAI :class:`~monai.networks.nets.DenseNet` backbone is replaced by :func:`densenet_features` (its
    classifier dropped); any other backbone must already map images to ``B x F`` features.
    :func:`backbone_state_dict_for_classifier` returns the weights to load into the classifier for fine-tuning.

    Args:
        backbone: a MONAI DenseNet, or a module mapping images to ``B x F``.
        head: maps ``B x F`` to ``B x D``, e.g. :class:`ProjectionHead`.
        normalize: L2-normalise the embeddings (the contrastive losses expect unit vectors).

    Example:
        .. code-block:: python

            act = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
            encoder = EncoderWithHead(DenseNet121(2, 1, 14, act=act), ProjectionHead(1024, 1024, 128))
            q = encoder(images)  # B x 128, unit norm
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.backbone = densenet_features(backbone) if isinstance(backbone, DenseNet) else backbone
        self.head = head
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W[ x D]`` images to ``B x D`` embeddings (unit norm when ``normalize``)."""
        z = self.head(self.backbone(x))
        return F.normalize(z, dim=1) if self.normalize else z


def backbone_state_dict_for_classifier(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The pretrained backbone's weights, keyed for the classifier network it came from.

    For a DenseNet backbone these are the keys of a MONAI DenseNet of the same architecture except its final
    Linear (``class_layers.out.*``, which the fine-tuning task replaces); for a DINO student or teacher
    (:class:`s4mi.networks.dino.MultiCropWrapper` of a :class:`~s4mi.networks.dino.CropViT`) the ViT's keys, those of
    :class:`~s4mi.networks.dino.ViTClassifier` but its ``head.*``; for a curriculum's
    :class:`~s4mi.networks.pretext.CurriculumNetwork` its DenseNet's, without the pretext heads. For the DenseNet::

        missing, unexpected = DenseNet121(2, 1, 6).load_state_dict(sd, strict=False)
        # missing == ["class_layers.out.weight", "class_layers.out.bias"], unexpected == []

    Args:
        encoder: an :class:`EncoderWithHead`, a ``MultiCropWrapper`` or a ``CurriculumNetwork``, possibly wrapped in ``DataParallel``/``DistributedDataParallel``
            (an :class:`s4mi.handlers.EMATeacher`'s ``ema_model`` works too).

    Returns:
        a new dict of the backbone's parameters and buffers (detached tensors sharing storage with the model's),
        without the projection head and without any ``class_layers.out.*`` key.

    Raises:
        TypeError: if ``encoder`` is neither.
    """
    if isinstance(encoder, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        encoder = encoder.module
    from s4mi.networks.dino import MultiCropWrapper
    from s4mi.networks.pretext import CurriculumNetwork

    if not isinstance(encoder, (EncoderWithHead, MultiCropWrapper, CurriculumNetwork)):
        raise TypeError(
            f"expected an EncoderWithHead, a MultiCropWrapper or a CurriculumNetwork, got {type(encoder).__name__}"
        )
    return {k: v for k, v in encoder.backbone.state_dict().items() if not k.startswith(_DENSENET_CLASSIFIER)}
