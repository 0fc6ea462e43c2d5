"""Pure tensor-in, tensor-out losses."""

from __future__ import annotations

from .cass import CASSLoss, cass_loss
from .consistency import (
    ConsistencyMSELoss,
    RelationConsistencyLoss,
    SoftDiceConsistencyLoss,
    relation_consistency_loss,
    relation_matrix,
    softmax_mse_loss,
)
from .contrastive import InfoNCEQueueLoss, JCLLoss, info_nce_queue_loss, jcl_enqueue_keys, jcl_loss
from .cross_teaching import CrossTeachingLoss, cross_pseudo_label
from .dino import DINOLoss
from .masked import MaskedBCEWithLogitsLoss
from .targets import confidence, hard_labels, probabilities, pseudo_label_targets

__all__ = [
    "CASSLoss",
    "ConsistencyMSELoss",
    "CrossTeachingLoss",
    "DINOLoss",
    "InfoNCEQueueLoss",
    "JCLLoss",
    "MaskedBCEWithLogitsLoss",
    "RelationConsistencyLoss",
    "SoftDiceConsistencyLoss",
    "cass_loss",
    "confidence",
    "cross_pseudo_label",
    "hard_labels",
    "info_nce_queue_loss",
    "jcl_enqueue_keys",
    "jcl_loss",
    "probabilities",
    "pseudo_label_targets",
    "relation_consistency_loss",
    "relation_matrix",
    "softmax_mse_loss",
]
