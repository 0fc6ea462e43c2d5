"""DINO's networks: a ViT backbone from MONAI's blocks that takes crops of any size, and DINO's projection head.

MONAI's :class:`monai.networks.nets.ViT` fixes its position embeddings to one image size, but DINO's multi-crop feeds
the student small local crops (96 px beside 224 px global ones) and interpolates the position embeddings to each
crop's patch grid (Caron et al. 2021, ``interpolate_pos_encoding``). :class:`CropViT` is that ViT built from MONAI's
:class:`~monai.networks.blocks.PatchEmbeddingBlock` (the patch projection) and
:class:`~monai.networks.blocks.TransformerBlock` layers, with a class token and learnable position embeddings that
are resized bicubically per crop size. Its output is the class token's features, as a classifier backbone's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["CropViT", "DINOHead", "MultiCropWrapper", "ViTClassifier"]


class CropViT(nn.Module):
    """A 2D ViT whose forward takes any crop size divisible by the patch size; returns ``B hidden_size`` features.

    Every trainable parameter gets a gradient from a forward, so it runs under ``DistributedDataParallel`` without
    ``find_unused_parameters`` (the MONAI parameters it does not use are frozen).

    Args:
        in_channels: image channels.
        img_size: the size the position embeddings are made for (the global crop).
        patch_size: patch edge.
        hidden_size, mlp_dim, num_layers, num_heads: the transformer (ViT-S/16: 384, 1536, 12, 6).
        dropout_rate: dropout in the blocks.
        qkv_bias: bias of the attention projections (DINO's ViTs have it).
    """

    def __init__(
        self,
        in_channels: int = 3,
        img_size: int = 224,
        patch_size: int = 16,
        hidden_size: int = 384,
        mlp_dim: int = 1536,
        num_layers: int = 12,
        num_heads: int = 6,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = int(patch_size)
        self.grid = img_size // patch_size
        self.hidden_size = int(hidden_size)
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="none",
            spatial_dims=2,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, hidden_size))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias=qkv_bias)
                for _ in range(num_layers)
            ]
        )
        self.norm = nn.LayerNorm(hidden_size)
        # MONAI builds parameters this forward never uses: the patch block's fixed-grid position embeddings and each
        # block's cross-attention norm. Frozen, so that DistributedDataParallel (find_unused_parameters=False) does
        # not wait for their gradients ("Expected to have finished reduction in the prior iteration"); their
        # state_dict keys stay.
        self.patch_embedding.position_embeddings.requires_grad_(False)
        for block in self.blocks:
            block.norm_cross_attn.requires_grad_(False)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """``1 (1 + h w) hidden`` position embeddings for an ``h x w`` patch grid (bicubic resize of the grid's)."""
        if h == w == self.grid:
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``B hidden_size`` class-token features."""
        if x.ndim != 4 or x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise ValueError(f"expected B C H W crops with H, W multiples of {self.patch_size}, got {list(x.shape)}")
        h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        tokens = self.patch_embedding.patch_embeddings(x).flatten(2).transpose(1, 2)  # B (h w) hidden
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


class ViTClassifier(CropViT):
    """A :class:`CropViT` with a linear classifier on its class token: the network DINO's backbone is fine-tuned as.

    Its parameters are the ViT's, under the same names (what a DINO pretraining saves as ``pretrained.pt``), plus
    ``head.weight`` and ``head.bias``, so :func:`s4mi.handlers.load_pretrained_backbone` loads a pretrained
    backbone with ``exclude=("head.",)``. :meth:`features` gives the class-token features (the probes' input).

    Args:
        in_channels: image channels.
        out_channels: classes (the head's outputs; named as MONAI's networks name it, so bundles set it alike).
        kwargs: the rest of :class:`CropViT`'s arguments.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 2, **kwargs: Any) -> None:
        super().__init__(in_channels=in_channels, **kwargs)
        self.head = nn.Linear(self.hidden_size, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DINOHead(nn.Module):
    """DINO's projection head: an MLP to a bottleneck, L2-normalised, then a weight-normalised linear layer to ``K``.

    Args:
        in_dim: backbone feature size.
        out_dim: ``K``, the number of prototypes (65536 in DINO; far fewer for a small dataset).
        hidden_dim: MLP width (2048).
        bottleneck_dim: bottleneck size (256).
        nlayers: MLP layers (3).
        norm_last_layer: fix the last layer's weight norm to 1 (DINO's default; False helps ViT-S converge).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops: crops of one size go through the backbone together, the head once.

    Args:
        backbone: crops ``B C H W`` -> features ``B F`` (e.g. :class:`CropViT`, or a CNN with pooled features).
        head: features -> outputs (e.g. :class:`DINOHead`).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Returns one ``B K`` output per crop, in the crops' order."""
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        sizes = [tuple(c.shape[-2:]) for c in crops]
        feats: list[torch.Tensor] = []
        start = 0
        while start < len(crops):  # consecutive crops of one size share a forward (as DINO's wrapper does)
            end = start
            while end < len(crops) and sizes[end] == sizes[start]:
                end += 1
            feats.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        out = self.head(torch.cat(feats))
        return list(out.chunk(len(crops)))
