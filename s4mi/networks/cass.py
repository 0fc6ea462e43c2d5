"""CASS's two networks: a CNN and a ViT that see the same image, each with its own projection (Singh and Cirrone,
"CASS: Cross Architectural Self-Supervision for Medical Image Analysis", arXiv 2206.04170; MLHC 2023, arXiv
2301.12025)."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DenseNet
from torch import nn

from s4mi.networks.heads import _DENSENET_CLASSIFIER, densenet_features

__all__ = ["CASSPair"]


class CASSPair(nn.Module):
    """A CNN and a ViT, each a backbone and a projection head, run on the same image: ``(cnn_out, vit_out)``.

    In the CASS code (github pranavsinghps1/CASS, ``CASS.ipynb``, cells 17-18) the two networks are timm's
    ImageNet-pretrained ResNet-50 and ViT-B/16 (384 px) *with their classifiers*: each network's output is its 1000
    ImageNet logits, and the loss compares those; for fine-tuning the classifier (``fc``, ``head``) is replaced by a
    Linear to the classes. Here the same structure is explicit: a backbone giving pooled features ``B F`` and a head
    ``F -> D`` per network. A ``torch.nn.Linear(F, D)`` head is CASS's (one layer, no normalisation);
    :class:`s4mi.networks.ProjectionHead` (``Linear -> act -> Linear``) is the usual self-supervised choice. Both
    heads must give the same ``D``. The heads are dropped for fine-tuning: :meth:`cnn_state_dict` and
    :meth:`vit_state_dict` return each backbone's weights keyed for its classifier.

    Args:
        cnn: a MONAI :class:`~monai.networks.nets.DenseNet` (e.g. ``DenseNet121``; made a feature extractor with
            :func:`s4mi.networks.densenet_features`, its classifier left out), or any module mapping images to
            ``B F_cnn`` (e.g. MONAI's ``ResNet(..., feed_forward=False)``).
        vit: a module mapping images to ``B F_vit``, e.g. :class:`s4mi.networks.CropViT` (the class token).
        cnn_head: ``B F_cnn -> B D``.
        vit_head: ``B F_vit -> B D``.

    Example:
        .. code-block:: python

            pair = CASSPair(
                DenseNet121(spatial_dims=2, in_channels=3, out_channels=7),
                CropViT(in_channels=3, img_size=64, patch_size=8, hidden_size=192, mlp_dim=768, num_layers=6),
                nn.Linear(1024, 256),
                nn.Linear(192, 256),
            )
            cnn_out, vit_out = pair(images)  # B x 256 each
            optimizer = torch.optim.Adam(pair.param_groups(), lr=1e-3)
    """

    def __init__(self, cnn: nn.Module, vit: nn.Module, cnn_head: nn.Module, vit_head: nn.Module) -> None:
        super().__init__()
        self.cnn = densenet_features(cnn) if isinstance(cnn, DenseNet) else cnn
        self.vit = vit
        self.cnn_head = cnn_head
        self.vit_head = vit_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B C H W`` images to ``(cnn_out, vit_out)``, ``B D`` each (the heads' outputs, not normalised)."""
        return self.cnn_head(self.cnn(x)), self.vit_head(self.vit(x))

    def param_groups(
        self, cnn: dict[str, Any] | None = None, vit: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """One optimizer parameter group per network (backbone and head), named ``"cnn"`` and ``"vit"``.

        CASS gives each network its own Adam (same learning rate); Adam's state and update are per parameter, so one
        Adam over these two groups takes exactly the same steps, and a group's options (``lr``, ``weight_decay``)
        can still differ per network.

        Args:
            cnn: extra options of the CNN's group (e.g. ``{"lr": 3e-4}``).
            vit: extra options of the ViT's group.

        Returns:
            ``[{"name": "cnn", "params": [...], **cnn}, {"name": "vit", "params": [...], **vit}]``, trainable
            parameters only.
        """
        return [
            {"name": name, "params": [p for m in modules for p in m.parameters() if p.requires_grad], **(extra or {})}
            for name, modules, extra in (
                ("cnn", (self.cnn, self.cnn_head), cnn),
                ("vit", (self.vit, self.vit_head), vit),
            )
        ]

    def cnn_state_dict(self) -> dict[str, torch.Tensor]:
        """The CNN backbone's weights keyed for its classifier, without the projection head.

        For a DenseNet these are the MONAI DenseNet's keys without ``class_layers.out.*`` (as
        :func:`s4mi.networks.backbone_state_dict_for_classifier`), so
        ``DenseNet121(...).load_state_dict(sd, strict=False)`` misses only the classifier; for another CNN, its own
        ``state_dict``.

        Returns:
            a new dict of detached tensors sharing storage with the network's.
        """
        return {k: v.detach() for k, v in self.cnn.state_dict().items() if not k.startswith(_DENSENET_CLASSIFIER)}

    def vit_state_dict(self) -> dict[str, torch.Tensor]:
        """The ViT backbone's weights (its own keys, e.g. :class:`~s4mi.networks.CropViT`'s), without the head.

        Returns:
            a new dict of detached tensors sharing storage with the network's.
        """
        return {k: v.detach() for k, v in self.vit.state_dict().items()}
