"""Network parts: projection heads, a backbone + head encoder, MoCo's key queue and shuffle-BN, DINO's ViT and head,
CASS's CNN + ViT pair, cross teaching's CNN + Transformer segmentation pair, pretext tasks on a shared backbone (curricular pretraining), DenseNet backbones for MONAI's FlexibleUNet (registered on import), and a forward hook that
records a layer's output (penultimate features with the logits)."""

from __future__ import annotations

from .cass import CASSPair
from .densenet_encoder import DenseNetEncoder
from .dino import CropViT, DINOHead, MultiCropWrapper, ViTClassifier
from .features import DENSENET_PENULTIMATE, capture_outputs, unwrap_network
from .heads import EncoderWithHead, ProjectionHead, backbone_state_dict_for_classifier, densenet_features
from .pair import PAIR_OUTPUTS, PairView, SegmentationPair
from .pretext import PRETEXT_TASKS, CurriculumNetwork, PretextTask, curriculum_network, curriculum_views
from .queue import KeyQueue, batch_shuffle, batch_unshuffle, concat_all_gather, shuffled_key_forward

__all__ = [
    "DENSENET_PENULTIMATE",
    "CASSPair",
    "CurriculumNetwork",
    "PRETEXT_TASKS",
    "PretextTask",
    "curriculum_network",
    "curriculum_views",
    "PAIR_OUTPUTS",
    "PairView",
    "SegmentationPair",
    "CropViT",
    "DINOHead",
    "ViTClassifier",
    "MultiCropWrapper",
    "DenseNetEncoder",
    "EncoderWithHead",
    "KeyQueue",
    "ProjectionHead",
    "backbone_state_dict_for_classifier",
    "batch_shuffle",
    "batch_unshuffle",
    "capture_outputs",
    "concat_all_gather",
    "densenet_features",
    "shuffled_key_forward",
    "unwrap_network",
]
