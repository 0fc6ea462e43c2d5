"""Is pretraining learning? kNN and linear probes of the backbone's frozen features during self-supervised training."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.networks.nets import DenseNet
from monai.utils import convert_to_tensor, optional_import
from torch import nn

from s4mi.handlers.metrics_logger import append_epoch_row
from s4mi.networks.dino import MultiCropWrapper, ViTClassifier
from s4mi.networks.heads import EncoderWithHead, densenet_features
from s4mi.networks.pretext import CurriculumNetwork
from s4mi.probe import is_multilabel, knn_probe, linear_probe

SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["ProbeHandler", "backbone_features", "embed"]


def backbone_features(network: nn.Module) -> nn.Module:
    """The module mapping images to pooled backbone features ``B F`` of a network.

    An :class:`s4mi.networks.EncoderWithHead` (a MoCo query or key encoder), a DINO
    :class:`~s4mi.networks.MultiCropWrapper` or a curriculum's :class:`~s4mi.networks.pretext.CurriculumNetwork`
    gives its backbone (the projection head is dropped, as for fine-tuning);
    a :class:`~s4mi.networks.ViTClassifier` its class-token features; a MONAI DenseNet gives :func:`s4mi.networks.densenet_features`; an
    :class:`s4mi.handlers.EMATeacher` its EMA model's; any other module is taken as a feature extractor.
    ``DataParallel``/``DistributedDataParallel`` wrappers are removed.
    """
    network = getattr(network, "ema_model", network)
    if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        network = network.module
    if isinstance(network, (EncoderWithHead, MultiCropWrapper, CurriculumNetwork)):
        return network.backbone
    if isinstance(network, ViTClassifier):
        return _Features(network)
    if isinstance(network, DenseNet):
        return densenet_features(network)
    return network


class _Features(nn.Module):
    """A classifier's ``features`` method as a module (the probes call their feature extractor)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x)  # type: ignore[operator]


@torch.no_grad()
def embed(
    features: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    image_key: str = "image",
    label_key: str = "label",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``N F`` (float32, on the CPU) and labels ``N [C]`` of every batch of ``loader``, in eval mode.

    Every submodule's train/eval mode is restored afterwards.

    Raises:
        KeyError: a batch lacks ``image_key`` or ``label_key`` (names the keys it has).
    """
    modes = [(m, m.training) for m in features.modules()]
    features.eval()
    feats, labels = [], []
    try:
        for batch in loader:
            if image_key not in batch or label_key not in batch:
                raise KeyError(f"probe batch lacks {image_key!r} or {label_key!r} (has {sorted(batch)})")
            x = convert_to_tensor(batch[image_key], track_meta=False).to(device)  # plain tensors: features of a
            feats.append(features(x).float().flatten(1).cpu())  # MetaTensor batch would carry its metadata
            labels.append(convert_to_tensor(batch[label_key], track_meta=False).cpu())
    finally:
        for m, mode in modes:
            m.training = mode
    if not feats:
        raise ValueError("the probe loader yielded no batch")
    return torch.cat(feats), torch.cat(labels)


class ProbeHandler:
    """Every ``every`` epochs (and at the last), score kNN and linear probes of each network's frozen features.

    With ``at_start`` the networks are also probed before the first step (epoch 0 in the rows and TensorBoard):
    the randomly initialised network of the same run, the baseline every later row is read against.

    Self-supervised pretraining has no validation metric and its loss does not tell whether the features know
    anything about the labels (solo-learn and lightly watch a kNN probe for this). Each run embeds the labelled
    ``probe_loader`` (the labelled share of training) and ``val_loader`` with each network's pooled backbone
    features (:func:`backbone_features`, or ``features``), then fits on the probe set and scores on validation:

    - DINO's weighted cosine kNN (:func:`s4mi.probe.knn_probe`, k = 20, T = 0.07);
    - a logistic-regression probe (:func:`s4mi.probe.linear_probe`, L2 chosen on a held-out share of the probe
      set), unless ``linear`` is False.

    Scores go to ``engine.state.metrics`` as ``<prefix>_<knn|linear>_<acc|f1|auc>_<network>`` (multi-label: only
    ``auc``, the mean AUC), e.g. ``probe_knn_auc_teacher``, where MONAI's StatsHandler and TensorBoardStatsHandler
    and :class:`s4mi.handlers.ContrastiveMonitor` read them if listed after this handler; they are removed at the
    start of the next epoch, so an epoch without a probe logs none. With ``folder`` a row per probe is appended to
    ``<folder>/<name>``; with ``summary_writer`` (or ``log_dir``) each score is also written to TensorBoard.
    :attr:`history` holds every row.

    The training is unchanged: no gradient, every module's train/eval mode restored, and the global torch (CPU and
    CUDA), NumPy and Python random states saved and restored around the probe (the loaders may draw from them).

    Args:
        networks: name -> network (or :class:`s4mi.handlers.EMATeacher`), e.g. ``{"student": net, "teacher": key}``.
        probe_loader: labelled batches to fit the probes on (eval transforms, no augmentation).
        val_loader: labelled batches to score them on.
        every: probe every this many epochs and at the last one; 0 disables the handler.
        epochs: probe at these (1-based) epochs instead of every ``every`` (a curriculum's stage ends); an empty
            list disables the handler.
        at_start: also probe at the start of a run that begins at epoch 0 (not of a resumed one).
        features: network -> module mapping images to ``B F`` (default :func:`backbone_features`).
        multilabel: labels are multi-hot findings (default: inferred, see :func:`s4mi.probe.is_multilabel`;
            one-hot multi-class labels need False).
        k: kNN neighbours.
        temperature: kNN temperature.
        linear: also fit the linear probe.
        image_key: batch key of the images.
        label_key: batch key of the labels.
        device: where to embed (default: the engine's ``state.device``, else the CPU).
        prefix: metric name prefix.
        folder: folder of the JSON-lines file (None: none written).
        name: its file name.
        summary_writer: a TensorBoard ``SummaryWriter`` to write the scores to.
        log_dir: make a ``SummaryWriter`` there instead (ignored with ``summary_writer``).
    """

    def __init__(
        self,
        networks: Mapping[str, Any],
        probe_loader: Iterable[Mapping[str, Any]],
        val_loader: Iterable[Mapping[str, Any]],
        every: int = 1,
        epochs: Sequence[int] | None = None,
        at_start: bool = False,
        features: Callable[[nn.Module], nn.Module] | None = None,
        multilabel: bool | None = None,
        k: int = 20,
        temperature: float = 0.07,
        linear: bool = True,
        image_key: str = "image",
        label_key: str = "label",
        device: torch.device | str | None = None,
        prefix: str = "probe",
        folder: str | os.PathLike | None = None,
        name: str = "probe_metrics.jsonl",
        summary_writer: Any = None,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0 (0 disables the probe), got {every}")
        if not networks:
            raise ValueError("ProbeHandler needs at least one network to probe")
        self.networks = dict(networks)
        self.probe_loader, self.val_loader = probe_loader, val_loader
        self.every = int(every)
        self.epochs = None if epochs is None else {int(e) for e in epochs}
        if self.epochs is not None and not self.epochs:
            self.every = 0
        self.at_start = bool(at_start)
        self.features = features or backbone_features
        self.multilabel, self.k, self.temperature, self.linear = multilabel, k, temperature, linear
        self.image_key, self.label_key, self.device, self.prefix = image_key, label_key, device, prefix
        self.path = None if folder is None else Path(folder) / name
        self.summary_writer = summary_writer
        self.log_dir = log_dir
        self.history: list[dict[str, float]] = []
        self._keys: set[str] = set()
        self._start = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        """Probe at EPOCH_COMPLETED of the chosen epochs (and at STARTED with ``at_start``); clear the previous scores
        at EPOCH_STARTED."""
        if self.every == 0:
            return
        if self.at_start:
            engine.add_event_handler(Events.STARTED, self._start_probe)
        engine.add_event_handler(Events.EPOCH_STARTED, self._clear)
        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=self._due), self)

    def _due(self, engine: Engine, epoch: int) -> bool:
        if self.epochs is not None:
            return epoch in self.epochs
        return epoch % self.every == 0 or epoch == engine.state.max_epochs

    def _start_probe(self, engine: Engine) -> None:
        if int(engine.state.epoch) == 0 and int(engine.state.iteration) == 0:
            self(engine)

    def _clear(self, engine: Engine) -> None:
        for key in self._keys:
            engine.state.metrics.pop(key, None)

    def scores(self, device: torch.device | str) -> dict[str, float]:
        """Probe every network now: ``{metric name: value}``."""
        out: dict[str, float] = {}
        for net_name, network in self.networks.items():
            feats = self.features(network)
            train_f, train_y = embed(feats, self.probe_loader, device, self.image_key, self.label_key)
            val_f, val_y = embed(feats, self.val_loader, device, self.image_key, self.label_key)
            multilabel = is_multilabel(train_y, self.multilabel)
            results = {"knn": knn_probe(train_f, train_y, val_f, val_y, None, self.k, self.temperature, multilabel)}
            if self.linear:
                results["linear"] = linear_probe(train_f, train_y, val_f, val_y, multilabel=multilabel)
            for probe, values in results.items():
                for metric, value in values.items():
                    out[f"{self.prefix}_{probe}_{metric}_{net_name}"] = value
        return out

    def __call__(self, engine: Engine) -> None:
        device = self.device or getattr(engine.state, "device", None) or "cpu"
        cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=cuda):
                values = self.scores(device)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        epoch = int(engine.state.epoch)
        engine.state.metrics.update(values)
        self._keys.update(values)
        row: dict[str, float] = {"epoch": epoch, "wall_s": round(time.perf_counter() - self._start, 3), **values}
        self.history.append(row)
        if self.path is not None:
            append_epoch_row(self.path, row, engine)
        writer = self.summary_writer
        if writer is None and self.log_dir is not None:
            writer = self.summary_writer = SummaryWriter(log_dir=str(self.log_dir))
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()
