"""Network parts: projection heads, a backbone + head encoder, MoCo's key queue and shuffle-BN."""

from __future__ import annotations

from .heads import EncoderWithHead, ProjectionHead, backbone_state_dict_for_classifier, densenet_features
from .pretrained import load_pretrained_backbone, save_pretrained_backbone
from .queue import KeyQueue, batch_shuffle, batch_unshuffle, concat_all_gather, shuffled_key_forward

__all__ = [
    "EncoderWithHead",
    "KeyQueue",
    "ProjectionHead",
    "backbone_state_dict_for_classifier",
    "batch_shuffle",
    "batch_unshuffle",
    "concat_all_gather",
    "densenet_features",
    "load_pretrained_backbone",
    "save_pretrained_backbone",
    "shuffled_key_forward",
]
