"""Per-epoch health of contrastive pretraining: loss, positive-pair similarity and embedding collapse."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.metrics import compute_embedding_collapse

from s4mi.handlers.metrics_logger import append_epoch_row

__all__ = ["ContrastiveMonitor"]


class ContrastiveMonitor:
    """Write one row per epoch of contrastive pretraining to ``<folder>/<name>`` and warn on collapse.

    A self-supervised run has no validation metric, and a collapsed encoder (every image mapped to one point, or
    to a low-dimensional subspace) still gives a finite, slowly decreasing loss. Each row holds the epoch's mean
    ``loss``, ``pos_cosine`` (mean cosine between a query and its key mean: how well the two views agree),
    ``neg_cosine`` (mean cosine between queries of different images in the batch) and ``collapse`` (MONAI's
    effective-rank collapse score of the epoch's last ``max_embeddings`` query embeddings, in [0, 1], higher is
    more collapsed), plus ``jcl_lambda``, ``wall_s`` and the numbers in the engine's ``state.metrics`` (e.g. a
    :class:`s4mi.handlers.ProbeHandler`'s scores, when it is attached first). A collapse score above
    ``collapse_warning`` warns.

    After a resume in the middle of an epoch, that epoch's row averages only the iterations run since.

    The embeddings are read from the output keys ``query_key`` (``B D``) and ``key_key`` (``B M D`` key views, or
    ``B D``: one), MoCo's ``q`` and ``keys`` by default; SimCLR's are ``z_1`` and ``z_2`` (its two views, not
    normalised: set ``normalize``).

    Args:
        folder: output folder (made if missing).
        name: file name.
        max_embeddings: query embeddings kept for the collapse score.
        collapse_warning: the collapse score that triggers a warning.
        query_key: output key of the queries.
        key_key: output key of their positives.
        normalize: L2-normalise both first (MoCo's are unit vectors already).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str = "pretrain_metrics.jsonl",
        max_embeddings: int = 512,
        collapse_warning: float = 0.9,
        query_key: str = "q",
        key_key: str = "keys",
        normalize: bool = False,
    ) -> None:
        self.path = Path(folder) / name
        self.max_embeddings = max_embeddings
        self.collapse_warning = collapse_warning
        self.query_key, self.key_key, self.normalize = query_key, key_key, normalize
        self._start = time.perf_counter()
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, float] = {"loss": 0.0, "pos_cosine": 0.0, "neg_cosine": 0.0}
        self._count = 0
        self._embeddings: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    @torch.no_grad()
    def _iteration(self, engine: Engine) -> None:
        out: Any = engine.state.output
        q, keys = out[self.query_key].detach().float(), out[self.key_key].detach().float()
        keys = keys.unsqueeze(1) if keys.ndim == 2 else keys
        if self.normalize:
            q, keys = F.normalize(q, dim=-1), F.normalize(keys, dim=-1)
        mu = F.normalize(keys.mean(dim=1), dim=1)
        self._sums["loss"] += float(out["loss"].detach())
        self._sums["pos_cosine"] += float((q * mu).sum(dim=1).mean())
        b = q.shape[0]
        if b > 1:
            sim = q @ q.T
            self._sums["neg_cosine"] += float((sim.sum() - sim.diagonal().sum()) / (b * (b - 1)))
        self._count += 1
        self._embeddings.append(q.cpu())
        while sum(e.shape[0] for e in self._embeddings) - self._embeddings[0].shape[0] >= self.max_embeddings:
            self._embeddings.pop(0)

    def _epoch(self, engine: Engine) -> None:
        row: dict[str, Any] = {"epoch": int(engine.state.epoch), "wall_s": round(time.perf_counter() - self._start, 3)}
        n = max(self._count, 1)
        row.update({k: v / n for k, v in self._sums.items()})
        lam = getattr(engine.state, "jcl_lambda", None)
        if lam is not None:
            row["jcl_lambda"] = float(lam)
        if self._embeddings:
            emb = torch.cat(self._embeddings)[-self.max_embeddings :]
            if emb.shape[0] >= 2:
                score = compute_embedding_collapse(emb, include_indicators=["effective_rank"], reduction="none")
                collapse = score.get("effective_rank_score")
                if collapse is not None:
                    row["collapse"] = float(collapse)
        for key, value in engine.state.metrics.items():
            if isinstance(value, (int, float)) and key not in row:
                row[key] = float(value)
        if "collapse" in row and math.isfinite(row["collapse"]) and row["collapse"] > self.collapse_warning:
            warnings.warn(
                f"epoch {row['epoch']}: the query embeddings look collapsed (effective-rank collapse score "
                f"{row['collapse']:.3f} > {self.collapse_warning}); check the augmentations, temperature and queue",
                stacklevel=2,
            )
        append_epoch_row(self.path, row, engine)
