"""MoCo v2 pretraining with a key queue, and its Joint Contrastive Learning (JCL) form (S2MTS2's first stage)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from s4mi.engines.base import SSLTrainer
from s4mi.keys import Keys
from s4mi.losses.contrastive import jcl_enqueue_keys
from s4mi.networks.queue import KeyQueue, shuffled_key_forward

__all__ = ["MoCoTrainer"]


class MoCoTrainer(SSLTrainer):
    r"""Self-supervised MoCo v2 / JCL pretraining of a query encoder with an EMA key encoder and a key queue.

    Per iteration (He et al., CVPR 2020, Algorithm 1; Chen et al. 2020 (MoCo v2); Cai et al., NeurIPS 2020 (JCL);
    S2MTS2, Liu et al., MLMI 2021, as its code runs it):

    1. ``q = f_q(x_q)``: L2-normalised query embeddings, ``B D``, with gradients;
    2. ``keys[:, m] = f_k(x_k[m])`` for each of the ``M`` key views, without gradients, through shuffle-BN
       (:func:`s4mi.networks.queue.shuffled_key_forward`: across ranks under DDP, over ``shuffle_splits`` chunks in
       one process) so batch statistics cannot leak which key matches which query;
    3. ``loss = loss_function(q, keys, queue, lambda_t)`` (:class:`s4mi.losses.JCLLoss`; with ``M = 1`` and
       ``lambda = 0`` it is MoCo v2's InfoNCE with a queue), ``lambda_t`` from a ramp (S2MTS2: ``2 (epoch+1) /
       epochs``);
    4. the key mean ``mu = keys.mean(1)`` is enqueued (gathered from every rank first);
    5. backward and optimizer step (:class:`s4mi.engines.SSLTrainer`: AMP on CUDA, gradient accumulation); the key encoder, an
       :class:`s4mi.handlers.EMATeacher` with ``m = 0.999`` per step, is then updated. MoCo updates ``f_k`` at the
       start of the next iteration with the same query weights, so the keys are the same.

    The key encoder runs in train mode (its own batch statistics, as in MoCo): build it with
    ``buffers="ema_train"`` so its running statistics come from its own forward passes.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as :class:`monai.engines.SupervisedTrainer`;
            ``network`` is the query encoder returning ``B D`` L2-normalised embeddings (e.g.
            :class:`s4mi.networks.EncoderWithHead`); the loader yields dictionaries with ``query_key`` (``B C H W``)
            and every key of ``key_keys``.
        loss_function: ``f(q, keys, queue, lam) -> scalar`` (:class:`s4mi.losses.JCLLoss`).
        teachers: the key encoder (one :class:`s4mi.handlers.EMATeacher`).
        queue: the negatives (:class:`s4mi.networks.KeyQueue`), updated in place; checkpoint it.
        jcl_lambda: JCL's lambda, a constant or a ramp of the epoch (``lambda_every``), kept in
            ``engine.state.jcl_lambda`` and output as ``jcl_lambda``.
        lambda_every: what the lambda ramp counts, ``"epoch"`` (S2MTS2) or ``"iteration"``.
        query_key: batch key of the query view.
        key_keys: batch keys of the ``M`` key views.
        shuffle_splits: chunks of the single-process shuffle-BN (ignored under DDP, where each rank is a chunk).
        shuffle_seed: seed of the shuffle permutations (reproducible, resumable runs).
        kwargs: the rest of :class:`s4mi.engines.SSLTrainer`'s arguments (``amp``, ``accumulation_steps``,
            ``train_handlers``, ``to_kwargs``, ``compile``, ...; the views are read by key, not by ``prepare_batch``).

    Raises:
        ValueError: not exactly one teacher, or no key views.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[..., torch.Tensor],
        teachers: Any,
        queue: KeyQueue,
        jcl_lambda: float | Callable[[int], float] = 0.0,
        lambda_every: str = "epoch",
        query_key: str = "image_q",
        key_keys: Sequence[str] = ("image_k0",),
        shuffle_splits: int = 2,
        shuffle_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("teacher_train_mode", True)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            teachers=teachers,
            **kwargs,
        )
        self.schedule(Keys.JCL_LAMBDA, jcl_lambda, every=lambda_every)  # type: ignore[arg-type]
        if len(self.teachers) != 1:
            raise ValueError(f"MoCo needs exactly one key encoder (teacher), got {len(self.teachers)}")
        self.key_keys = list(key_keys)
        if not self.key_keys:
            raise ValueError("MoCo needs at least one key view (key_keys)")
        self.query_key = query_key
        self.queue = queue
        self.shuffle_splits = int(shuffle_splits)
        self.shuffle_seed = int(shuffle_seed)

    def split_batch(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """Views -> ``x_q`` (``B C H W``) and ``x_k`` (``B M C H W``) on the device.

        Raises:
            KeyError: a view is missing.
            LabelLeakError: the batch holds a label key (pretraining is self-supervised).
        """
        self.refuse_labels(batchdata, "pretraining")
        absent = [k for k in (self.query_key, *self.key_keys) if k not in batchdata]
        if absent:
            raise KeyError(f"the pretraining batch lacks view key(s) {absent} (has {sorted(batchdata)})")
        x_q = self.to_device(batchdata[self.query_key])
        x_k = torch.stack([self.to_device(batchdata[k]) for k in self.key_keys], dim=1)
        if x_k.shape[0] != x_q.shape[0] or x_k.shape[2:] != x_q.shape[1:]:
            raise ValueError(
                f"query views {tuple(x_q.shape)} and key views {tuple(x_k.shape)} (B M C H W) do not match"
            )
        return {Keys.X_Q: x_q, Keys.X_K: x_k}

    def initial_output(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {Keys.IMAGE: batch[Keys.X_Q]}

    def _shuffle_generator(self, engine: SSLTrainer, view: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.shuffle_seed * 1_000_003 + engine.state.iteration * 64 + view) % (2**63))
        return g

    def train_step(self, engine: SSLTrainer, batch: dict[str, torch.Tensor]) -> None:
        x_q, x_k = batch[Keys.X_Q], batch[Keys.X_K]
        q = engine.inferer(x_q, engine.network)
        key_encoder = engine.teacher
        key_encoder.train(engine.teacher_train_mode)
        with torch.no_grad():
            keys = torch.stack(
                [
                    shuffled_key_forward(
                        key_encoder, x_k[:, m], self.shuffle_splits, generator=self._shuffle_generator(engine, m)
                    )
                    for m in range(x_k.shape[1])
                ],
                dim=1,
            )
        out = engine.state.output
        out.update({Keys.Q: q, Keys.KEYS: keys, Keys.PRED: q})
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        lam = engine.scheduled(Keys.JCL_LAMBDA)
        # the queue's forward is a copy (the loss keeps the negatives for backward), so enqueueing now is safe
        loss = engine.loss_function(q.float(), keys.float(), self.queue(), lam)
        self.queue.enqueue(jcl_enqueue_keys(keys.float()))
        out.update({Keys.JCL_LAMBDA: lam, Keys.LOSS: loss})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
