"""SimCLR (Chen et al., ICML 2020): contrastive pretraining on two views of each image, in-batch negatives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.losses import ContrastiveLoss

from s4mi.engines.base import SSLTrainer
from s4mi.keys import Keys

__all__ = ["SimCLRTrainer"]


class SimCLRTrainer(SSLTrainer):
    r"""SimCLR pretraining of an encoder with a projection head: SRCL's first stage in its two-stage mode.

    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual Representations", ICML
    2020, Algorithm 1. Per iteration:

    1. ``x_1, x_2``: two augmented views of each image (``view_keys``), ``B C H W`` each;
    2. ``z_1, z_2 = network([x_1; x_2])``, one forward over both views (batch norm sees the ``2B`` images together,
       SimCLR's global batch norm within one process), both with gradients;
    3. ``loss = loss_function(z_1, z_2)``: NT-Xent over the ``2B`` anchors, each image's other view the positive and
       the other ``2B - 2`` views the negatives (:class:`monai.losses.ContrastiveLoss`, which is SimCLR's loss);
    4. backward and optimizer step (:class:`SSLTrainer`: AMP on CUDA, gradient accumulation).

    No teacher, no queue. Under DDP each rank contrasts its own batch: its negatives are its own ``2B - 2`` views
    (SimCLR gathers every device's).

    Args:
        loss_function: ``f(z_1, z_2) -> scalar``; default ``monai.losses.ContrastiveLoss(temperature)``.
        temperature: NT-Xent's temperature when ``loss_function`` is not given.
        view_keys: batch keys of the two views.
        args, kwargs: :class:`SSLTrainer`'s (``device``, ``max_epochs``, ``train_data_loader``, ``network``,
            ``optimizer``, then ``amp``, ``accumulation_steps``, ``train_handlers``, ``to_kwargs``, ``compile``, ... by
            name). ``network`` is the encoder with its projection head, ``B C H W -> B D`` (e.g.
            :class:`s4mi.networks.EncoderWithHead`), possibly in ``DistributedDataParallel``; the loader yields
            dictionaries with both ``view_keys`` and no label key.

    Raises:
        ValueError: ``view_keys`` does not name two views.
    """

    def __init__(
        self,
        *args: Any,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        temperature: float = 0.5,
        view_keys: Sequence[str] = ("image_v0", "image_v1"),
        **kwargs: Any,
    ) -> None:
        if len(view_keys) != 2:
            raise ValueError(f"SimCLR contrasts two views of each image, got view_keys {list(view_keys)}")
        kwargs["loss_function"] = ContrastiveLoss(temperature) if loss_function is None else loss_function
        super().__init__(*args, **kwargs)
        self.view_keys = list(view_keys)

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The two views on the device, as ``x_1`` and ``x_2``.

        Raises:
            KeyError: a view is missing.
            LabelLeakError: the batch holds a label key (pretraining is self-supervised).
            ValueError: the views differ in shape.
        """
        self.refuse_labels(batchdata, "pretraining")
        x_1, _ = self.prepare_stream(batchdata, self.view_keys[0], None, "pretraining")
        x_2, _ = self.prepare_stream(batchdata, self.view_keys[1], None, "pretraining")
        if x_1.shape != x_2.shape:
            raise ValueError(f"the two views differ in shape: {tuple(x_1.shape)} vs {tuple(x_2.shape)}")
        return {Keys.X_1: x_1, Keys.X_2: x_2}

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[Keys.X_1]}

    def train_step(self, engine: SSLTrainer, batch: dict[str, torch.Tensor]) -> None:
        z_1, z_2 = engine.inferer(torch.cat([batch[Keys.X_1], batch[Keys.X_2]]), engine.network).chunk(2)
        out = engine.state.output
        out.update({Keys.Z_1: z_1, Keys.Z_2: z_2, Keys.PRED: z_1})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        out[Keys.LOSS] = engine.loss_function(z_1.float(), z_2.float())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
