"""A MONAI DenseNet as a FlexibleUNet backbone: ``FlexibleUNet(..., backbone="densenet169")``.

MONAI's :class:`~monai.networks.nets.FlexibleUNet` ships EfficientNet and ResNet encoders but no DenseNet one,
while the online pseudo-labelling polyp segmenters of Pham Van et al. (arXiv 2209.14599) put a UNet/FPN decoder on
a DenseNet-169. :class:`DenseNetEncoder` is MONAI's own :class:`~monai.networks.nets.DenseNet` (same modules, same
names, same initialisation) whose ``forward`` returns the five multi-scale feature maps FlexibleUNet's decoder
expects. Importing :mod:`s4mi.networks` registers it under the names of :data:`DENSENET_ENCODER_CONFIGS`::

    import s4mi.networks  # noqa: F401  (registers the DenseNet backbones)
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=3, out_channels=1, backbone="densenet169", spatial_dims=2)
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import DenseNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexUNetEncoderRegister
from torch import nn

__all__ = ["DENSENET_ENCODER_CONFIGS", "DenseNetEncoder", "densenet_feature_channels", "register_densenet_encoders"]

# Backbone name -> DenseNet architecture. The first three are MONAI's DenseNet121/169/201 defaults (torchvision's
# too); "densenet-tiny" is a small CPU-friendly one for the phantom benchmarks.
DENSENET_ENCODER_CONFIGS: dict[str, dict[str, Any]] = {
    "densenet121": {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 24, 16), "bn_size": 4},
    "densenet169": {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 32, 32), "bn_size": 4},
    "densenet201": {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 48, 32), "bn_size": 4},
    "densenet-tiny": {"init_features": 16, "growth_rate": 16, "block_config": (2, 2, 2, 2), "bn_size": 4},
}


def densenet_feature_channels(init_features: int, growth_rate: int, block_config: Sequence[int]) -> tuple[int, ...]:
    """Channels of the feature maps :class:`DenseNetEncoder` returns, shallowest first.

    The stem gives ``init_features`` channels; dense block ``i`` adds ``block_config[i] * growth_rate`` to its
    input, and each transition but the last halves the count (rounding down), as in MONAI's DenseNet.

    Args:
        init_features: filters of the first convolution.
        growth_rate: filters each dense layer adds.
        block_config: number of dense layers per block.

    Returns:
        ``len(block_config) + 1`` channel counts, e.g. ``(64, 256, 512, 1024, 1024)`` for DenseNet-121.
    """
    channels = [init_features]
    c = init_features
    for i, num_layers in enumerate(block_config):
        c += num_layers * growth_rate
        channels.append(c)
        if i < len(block_config) - 1:
            c //= 2
    return tuple(channels)


class DenseNetEncoder(DenseNet, BaseEncoder):
    """MONAI's DenseNet returning multi-scale features, a backbone for :class:`~monai.networks.nets.FlexibleUNet`.

    MONAI's FlexibleUNet ships EfficientNet and ResNet encoders but no DenseNet one; this adds it without
    re-implementing DenseNet: the encoder *is* a :class:`~monai.networks.nets.DenseNet` built with the same
    arguments, minus the classifier's Linear (``class_layers.out``). Its ``state_dict`` is therefore that of a
    DenseNet of the same architecture without ``class_layers.out.*``, so the weights of a MONAI DenseNet
    classifier, or of a DenseNet backbone pretrained in s4mi (:func:`s4mi.networks.backbone_state_dict_for_classifier`),
    load into it directly.

    ``forward`` returns ``len(block_config) + 1`` feature maps (5 for the registered backbones) at strides 2, 4, 8,
    16 and 32, each after a normalisation and activation of the DenseNet itself:

    * the stem, after ``features.relu0`` (stride 2, ``init_features`` channels);
    * the output of dense blocks 1 to 3 after their transition's ``norm`` and ``relu``, i.e. just before the
      transition's 1x1 convolution and average pooling (strides 4, 8, 16);
    * the output of the last dense block after ``features.norm5`` and ``class_layers.relu`` (stride 32), which is
      exactly what the DenseNet classifier pools.

    Args:
        spatial_dims: number of spatial dimensions of the input image (2 or 3 for FlexibleUNet).
        in_channels: number of input channels.
        init_features: number of filters in the first convolution layer.
        growth_rate: how many filters to add each layer (k in the paper).
        block_config: how many layers in each dense block.
        bn_size: multiplicative factor for the number of bottleneck layers (``bn_size * k`` features).
        act: activation type and arguments, as for MONAI's DenseNet.
        norm: feature normalization type and arguments, as for MONAI's DenseNet.
        dropout_prob: dropout rate after each dense layer.
        pretrained: must be False: no pretrained weights are bundled, and none can be downloaded. Load a
            ``state_dict`` yourself instead (see above).

    Raises:
        ValueError: if ``pretrained`` is true.

    Example:
        .. code-block:: python

            encoder = DenseNetEncoder(spatial_dims=2, in_channels=3, **DENSENET_ENCODER_CONFIGS["densenet169"])
            features = encoder(torch.randn(1, 3, 64, 64))  # 5 maps: 32x32, 16x16, 8x8, 4x4, 2x2
    """

    backbone_names = list(DENSENET_ENCODER_CONFIGS)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        dropout_prob: float = 0.0,
        pretrained: bool = False,
    ) -> None:
        if len(block_config) != 4:
            raise ValueError(
                f"DenseNetEncoder needs four dense blocks (FlexibleUNet takes five feature maps), got {block_config}"
            )
        if pretrained:
            raise ValueError(
                "DenseNetEncoder has no pretrained weights (none are bundled and nothing can be downloaded): "
                "use pretrained=False and load a DenseNet state_dict with load_state_dict instead."
            )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=1,  # the classifier's Linear, dropped below
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=block_config,
            bn_size=bn_size,
            act=act,
            norm=norm,
            dropout_prob=dropout_prob,
        )
        # Keep only the final activation, under its DenseNet name, so state_dict keys stay the DenseNet's.
        self.class_layers = nn.Sequential(OrderedDict([("relu", self.class_layers.get_submodule("relu"))]))
        self.num_blocks = len(block_config)
        self.feature_channels = densenet_feature_channels(init_features, growth_rate, block_config)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """Multi-scale features of ``x``.

        Args:
            x: ``B x in_channels x H x W[ x D]``.

        Returns:
            ``len(block_config) + 1`` tensors; the ``i``-th (from 0) has ``feature_channels[i]`` channels and
            spatial size about ``H / 2 ** (i + 1)``.
        """
        # Written out for the four dense blocks with literal names: TorchScript (``monai.bundle ckpt_export``)
        # accepts ``getattr`` with string literals only.
        f: Any = self.features  # submodules by their DenseNet names (Any: nn.Module attributes type as Tensor)
        head: Any = self.class_layers
        x = f.relu0(f.norm0(f.conv0(x)))
        outputs = [x]
        x = f.denseblock1(f.pool0(x))
        x = f.transition1.relu(f.transition1.norm(x))
        outputs.append(x)
        x = f.denseblock2(f.transition1.pool(f.transition1.conv(x)))
        x = f.transition2.relu(f.transition2.norm(x))
        outputs.append(x)
        x = f.denseblock3(f.transition2.pool(f.transition2.conv(x)))
        x = f.transition3.relu(f.transition3.norm(x))
        outputs.append(x)
        x = f.denseblock4(f.transition3.pool(f.transition3.conv(x)))
        outputs.append(head.relu(f.norm5(x)))
        return outputs

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Initialisation arguments of each registered backbone (FlexibleUNet overrides the first three)."""
        return [
            {"spatial_dims": 2, "in_channels": 3, "pretrained": False, **DENSENET_ENCODER_CONFIGS[name]}
            for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of each registered backbone's outputs, e.g. ``(64, 256, 512, 1280, 1664)`` for densenet169."""
        return [
            densenet_feature_channels(
                DENSENET_ENCODER_CONFIGS[name]["init_features"],
                DENSENET_ENCODER_CONFIGS[name]["growth_rate"],
                DENSENET_ENCODER_CONFIGS[name]["block_config"],
            )
            for name in cls.backbone_names
        ]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Number of feature maps of each registered backbone: 5 (4 dense blocks + the stem)."""
        return [len(DENSENET_ENCODER_CONFIGS[name]["block_config"]) + 1 for name in cls.backbone_names]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Names the backbones are registered under in FlexibleUNet's ``FLEXUNET_BACKBONE``."""
        return list(cls.backbone_names)


def _is_densenet_encoder(cls: Any) -> bool:
    # By name, not identity, so that re-executing this module (importlib.reload) replaces its own entries.
    return getattr(cls, "__module__", None) == __name__ and getattr(cls, "__qualname__", None) == "DenseNetEncoder"


def register_densenet_encoders(registry: FlexUNetEncoderRegister | None = None) -> bool:
    """Register :class:`DenseNetEncoder`'s backbones with FlexibleUNet; importing :mod:`s4mi.networks` does it.

    Idempotent: registering again (or after reloading this module) rewrites the same entries. Names already taken
    by another class (say, a future MONAI DenseNet encoder) are left alone, with a warning, and nothing is registered.

    Args:
        registry: the register to add to; MONAI's ``FLEXUNET_BACKBONE`` (the one FlexibleUNet reads) by default.

    Returns:
        whether the backbones were registered.
    """
    registry = FLEXUNET_BACKBONE if registry is None else registry
    taken = {
        name: entry["type"]
        for name in DenseNetEncoder.get_encoder_names()
        if (entry := registry.register_dict.get(name)) is not None and not _is_densenet_encoder(entry["type"])
    }
    if taken:
        warnings.warn(
            f"FlexibleUNet backbone names already registered by other classes, DenseNetEncoder not registered: {taken}",
            stacklevel=2,
        )
        return False
    registry.register_class(DenseNetEncoder)
    return True


register_densenet_encoders()
