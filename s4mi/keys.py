"""The names s4mi's engines, datalists and handlers share: engine output keys, label keys, the unlabelled index.

One module, so that an engine, a handler reading ``engine.state.output`` and a datalist check cannot disagree on a
spelling. ``image``/``label``/``pred``/``loss`` are MONAI's own keys (``monai.utils.CommonKeys``), so stock
handlers (``from_engine(["loss"])``) read s4mi's engine outputs unchanged.
"""

from __future__ import annotations

from monai.utils import CommonKeys

__all__ = ["LABEL_KEYS", "ULB_INDEX", "Keys"]

LABEL_KEYS: tuple[str, ...] = ("label", "mask", "seg")
"""Datalist item keys that carry supervision; ``"unlabeled"`` items and unlabelled batches must hold none of them."""

ULB_INDEX = "ulb_index"
"""Key of an unlabelled item's position in the unlabelled set (:func:`s4mi.data.prepare.with_index`): rendered pseudo
labels are served by it."""


class Keys:
    """Names in ``engine.state.output`` (and in ``engine.state`` for scheduled weights), the vocabulary of the
    semi- and self-supervised literature."""

    # MONAI's
    IMAGE = CommonKeys.IMAGE
    LABEL = CommonKeys.LABEL
    PRED = CommonKeys.PRED
    LOSS = CommonKeys.LOSS
    # teacher-student (labelled + unlabelled streams)
    X_LB = "x_lb"
    Y_LB = "y_lb"
    X_ULB_W = "x_ulb_w"
    X_ULB_S = "x_ulb_s"
    X_LB_S = "x_lb_s"
    LOGITS_LB = "logits_lb"
    LOGITS_ULB_S = "logits_ulb_s"
    LOGITS_ULB_T = "logits_ulb_t"
    PSEUDO_LABEL = "pseudo_label"
    ULB_INDEX = ULB_INDEX
    MASK = "mask"
    LOSS_SUP = "loss_sup"
    LOSS_UNSUP = "loss_unsup"
    UNSUP_WEIGHT = "unsup_weight"
    # sample relation consistency (SRC-MT): penultimate features of the unlabelled batch, ``B D``
    FEATS_ULB_S = "feats_ulb_s"
    FEATS_ULB_T = "feats_ulb_t"
    LOSS_RELATION = "loss_relation"
    RELATION_WEIGHT = "relation_weight"
    # contrastive term of a semi-supervised method (SRCL): projections of two views of each image, ``B D``
    Z_1 = "z_1"
    Z_2 = "z_2"
    LOSS_CONTRASTIVE = "loss_contrastive"
    CONTRASTIVE_WEIGHT = "contrastive_weight"
    # cross teaching between a CNN and a Transformer: each network's logits, the argmax it teaches the other with,
    # and its own loss terms (``loss_sup``/``loss_unsup`` are the sums over both networks)
    LOGITS_LB_CNN = "logits_lb_cnn"
    LOGITS_LB_TRANSFORMER = "logits_lb_transformer"
    LOGITS_ULB_CNN = "logits_ulb_cnn"
    LOGITS_ULB_TRANSFORMER = "logits_ulb_transformer"
    PSEUDO_LABEL_CNN = "pseudo_label_cnn"
    PSEUDO_LABEL_TRANSFORMER = "pseudo_label_transformer"
    LOSS_SUP_CNN = "loss_sup_cnn"
    LOSS_SUP_TRANSFORMER = "loss_sup_transformer"
    LOSS_UNSUP_CNN = "loss_unsup_cnn"
    LOSS_UNSUP_TRANSFORMER = "loss_unsup_transformer"
    # self-supervised contrastive (MoCo / JCL)
    X_Q = "x_q"
    X_K = "x_k"
    Q = "q"
    KEYS = "keys"
    JCL_LAMBDA = "jcl_lambda"
    # self-supervised contrastive, in-batch negatives (SimCLR): the two views of each image
    X_1 = "x_1"
    X_2 = "x_2"
