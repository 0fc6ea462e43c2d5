"""CASS: cross-architectural self-supervision, a CNN and a ViT trained together on the same images (Singh and
Cirrone, "CASS: Cross Architectural Self-Supervision for Medical Image Analysis", arXiv 2206.04170; "Efficient
Representation Learning for Healthcare with Cross-Architectural Self-Supervision", MLHC 2023, arXiv 2301.12025), the
S4MI benchmark's second self-supervised pretraining."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from torch import nn

from s4mi.engines.base import SSLTrainer, untrained_parameters
from s4mi.keys import Keys
from s4mi.losses.cass import CASSLoss

__all__ = ["CASSTrainer"]


class CASSTrainer(SSLTrainer):
    r"""CASS pretraining: a CNN and a ViT see the same augmented image and learn to agree, with no labels.

    Per iteration (the authors' code, github pranavsinghps1/CASS, ``CASS.ipynb`` cell 18, ``ssl_train_model``):

    1. ``x``: one augmented view per image (``image_key``), the same tensor to both networks;
    2. ``cnn_out, vit_out = network(x)`` (:class:`s4mi.networks.CASSPair`: each backbone through its own head,
       ``B D`` each), both with gradients;
    3. ``loss = loss_function(cnn_out, vit_out)``, :class:`s4mi.losses.CASSLoss`: :math:`2 - 2\cos`, averaged over
       the batch, symmetric, neither side detached;
    4. one backward and one optimizer step: both networks learn from the same loss (AMP on CUDA and gradient
       accumulation from :class:`SSLTrainer`).

    The optimizer: CASS builds one ``Adam(lr=1e-3)`` per network (wrapped in torchcontrib's ``SWA`` in manual mode,
    which never averages since ``update_swa`` is never called, so plain Adam) and a ``CosineAnnealingLR(T_max=16,
    eta_min=1e-6)`` per network stepped every *iteration* (so the learning rate falls to 1e-6 over 16 iterations,
    climbs back to 1e-3 over the next 16, and so on); both step after the one backward (cell 19). Adam is per
    parameter, so one Adam over :meth:`s4mi.networks.CASSPair.param_groups` (a group per network;
    ``tests/networks/test_cass.py`` checks it takes the same steps as two Adams) is CASS's optimiser, and one MONAI
    ``LrScheduleHandler(..., epoch_level=False)`` on it is CASS's schedule. Two deliberate differences: the
    gradients are zeroed before each step (CASS's pretraining loop never calls ``zero_grad``, so each of its steps
    uses the sum of every gradient since the start), and the pretraining data is whatever loader is given (CASS
    pretrains on the labelled subset it then fine-tunes on, cells 21-25; s4mi's default is all training images).

    Args:
        device, max_epochs, train_data_loader, optimizer: as :class:`monai.engines.SupervisedTrainer`; the loader
            yields dictionaries with ``image_key`` (``B C H W``) and no label key. ``optimizer`` must hold every
            trainable parameter of ``network`` (both networks learn), e.g.
            ``torch.optim.Adam(pair.param_groups(), lr=1e-3)``.
        network: the :class:`s4mi.networks.CASSPair` (or any module returning ``(cnn_out, vit_out)``), possibly in
            ``DistributedDataParallel``.
        loss_function: ``f(cnn_out, vit_out) -> scalar``; default :class:`s4mi.losses.CASSLoss`.
        image_key: batch key of the augmented view (``"image"``).
        kwargs: the rest of :class:`SSLTrainer`'s arguments (``amp``, ``accumulation_steps``, ``train_handlers``,
            ``prepare_batch``, ``to_kwargs``, ``compile``, ...).

    Raises:
        ValueError: ``optimizer`` leaves out a trainable parameter of ``network`` (named).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        image_key: str = "image",
        **kwargs: Any,
    ) -> None:
        untrained = untrained_parameters(network, optimizer)
        if untrained:
            raise ValueError(
                f"the optimizer leaves out {len(untrained)} trainable parameter(s) of the network, e.g. "
                f"{untrained[:3]}: CASS trains both networks (use CASSPair.param_groups())"
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=CASSLoss() if loss_function is None else loss_function,
            **kwargs,
        )
        self.image_key = image_key

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The view on the device, as ``image``.

        Raises:
            KeyError: the batch lacks ``image_key``.
            LabelLeakError: the batch holds a label key (pretraining is self-supervised).
        """
        self.refuse_labels(batchdata, "pretraining")
        image, _ = self.prepare_stream(batchdata, self.image_key, None, "pretraining")
        return {Keys.IMAGE: image}

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[Keys.IMAGE]}

    def train_step(self, engine: SSLTrainer, batch: dict[str, torch.Tensor]) -> None:
        cnn_out, vit_out = engine.inferer(batch[Keys.IMAGE], engine.network)
        out = engine.state.output
        out.update({Keys.PRED: cnn_out, "cnn_out": cnn_out, "vit_out": vit_out})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out[Keys.LOSS] = engine.loss_function(cnn_out, vit_out)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
