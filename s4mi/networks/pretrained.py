"""Start a network from a self-supervised pretraining stage's weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["load_pretrained_backbone", "save_pretrained_backbone"]

logger = logging.getLogger(__name__)


def load_pretrained_backbone(
    network: nn.Module,
    path: str | os.PathLike,
    exclude: Sequence[str] = ("class_layers.out.",),
    key: str | None = "model",
) -> list[str]:
    """Load pretrained backbone weights into ``network``, leaving its task head (``exclude``) as initialised.

    The pretraining bundles (``configs/pretrain.json``) save the key encoder's backbone with the key names of the
    plain MONAI network (e.g. :class:`monai.networks.nets.DenseNet121`), so the fine-tuning network loads them
    directly; only the classifier, which pretraining never trained, keeps its fresh initialisation. Unwraps
    ``DataParallel``/``DistributedDataParallel``.

    Args:
        network: the network to fine-tune.
        path: checkpoint written by the pretraining stage (loaded with ``weights_only=True``).
        exclude: prefixes of the parameter names to leave out (the task head).
        key: the entry of the checkpoint holding the state dict (MONAI's savers write ``{"model": ...}`` unless a
            single object is saved); None when the file is the state dict itself.

    Returns:
        the names of the parameters left at their initialisation (those under ``exclude``).

    Raises:
        FileNotFoundError: ``path`` does not exist (with how to make it).
        ValueError: the checkpoint lacks a backbone weight, or a weight's shape differs (names the first ones).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} not found: run the bundle's configs/pretrain.json first (or `s4mi run "
            "<bundle>`, which runs both stages), or set pretrained_ckpt to '' to fine-tune from scratch"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if key is not None and key in state and isinstance(state[key], dict):
        state = state[key]
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    own = network.state_dict()
    skipped = [k for k in own if any(k.startswith(p) for p in exclude)]
    wanted = [k for k in own if k not in skipped]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} backbone weight(s) of the network, e.g. {missing[:3]}")
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wanted if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: weight shapes differ from the network's, e.g. {bad[:3]}")
    network.load_state_dict({k: state[k] for k in wanted}, strict=False)
    logger.info(
        f"s4mi: loaded the pretrained backbone from {path} ({len(wanted)} tensors; left as initialised: {skipped})"
    )
    return skipped


def save_pretrained_backbone(encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write an encoder's backbone weights, keyed for its classifier network, atomically to ``path``.

    The pretraining bundles call this once training has completed (not on an exception, unlike a final
    checkpoint), so a ``pretrained.pt`` always holds a finished pretraining. The file is the plain state dict of
    the MONAI network without its classifier and without the projection head: :func:`load_pretrained_backbone`
    reads it, and so does ``DenseNet121(...).load_state_dict(torch.load(path, weights_only=True), strict=False)``.

    Args:
        encoder: an :class:`s4mi.networks.EncoderWithHead` (e.g. the key encoder, ``EMATeacher.ema_model``).
        path: the file to write (its folder is made).

    Returns:
        the path written.
    """
    from s4mi.networks.heads import backbone_state_dict_for_classifier

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in backbone_state_dict_for_classifier(encoder).items()}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
