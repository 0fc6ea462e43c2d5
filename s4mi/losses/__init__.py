"""Pure tensor-in, tensor-out losses."""

from __future__ import annotations

from .consistency import ConsistencyMSELoss, probabilities, softmax_mse_loss
from .masked import MaskedBCEWithLogitsLoss

__all__ = ["ConsistencyMSELoss", "MaskedBCEWithLogitsLoss", "probabilities", "softmax_mse_loss"]
