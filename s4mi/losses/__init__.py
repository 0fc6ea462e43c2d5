"""Pure tensor-in, tensor-out losses."""

from __future__ import annotations

from .consistency import ConsistencyMSELoss, probabilities, softmax_mse_loss

__all__ = ["ConsistencyMSELoss", "probabilities", "softmax_mse_loss"]
