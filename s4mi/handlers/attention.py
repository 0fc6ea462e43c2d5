"""Where a classifier looks: the share of its Grad-CAM attention inside a mask (the lungs of a chest radiograph)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.utils import convert_to_tensor
from monai.visualize import GradCAM
from torch import nn

__all__ = ["AttentionInMask", "attention_share", "grad_cam"]


def attention_share(cam: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the positive attention mass inside the mask: ``sum(relu(cam) * mask) / sum(relu(cam))``.

    Args:
        cam: attention maps ``B 1 H W`` (or ``B H W``).
        mask: masks of the same shape, 1 inside (values are thresholded at 0.5).

    Returns:
        ``B`` shares in ``[0, 1]``; NaN for an image whose map has no positive mass.

    Raises:
        ValueError: the shapes differ.
    """
    if cam.shape != mask.shape:
        raise ValueError(f"attention map shape {tuple(cam.shape)} differs from the mask's {tuple(mask.shape)}")
    pos = F.relu(cam.float()).flatten(1)
    inside = (pos * (mask.flatten(1) > 0.5)).sum(1)
    total = pos.sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float32).tiny), torch.nan)


def grad_cam(
    network: nn.Module,
    x: torch.Tensor,
    target_layer: str,
    class_idx: torch.Tensor | None = None,
    cam: GradCAM | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps ``B 1 H W`` (upsampled to the image, not normalised) and the class each one explains.

    MONAI's :class:`~monai.visualize.GradCAM` does the maths. Two things are done around it: its ``class_idx=None``
    picks each image's top class but then back-propagates the sum of every picked class's score over the whole
    batch (``logits[:, idx]`` is ``B x B``), so each image's map would mix the classes of the others; here the batch
    is split by class and GradCAM called once per class with an integer index. And its default post-processing maps
    each map's (min, max) to (1, 0), flipping it; the maps here are GradCAM's ReLU'd, bilinearly upsampled values
    (a share of attention mass is scale-free).

    Args:
        network: the classifier (eval mode is set for the call, the mode restored after).
        x: images ``B C H W``.
        target_layer: the layer whose activations and gradients weigh the map (``class_layers.relu``: the last
            feature map of a MONAI DenseNet).
        class_idx: the class per image (None: each image's highest logit).
        cam: a GradCAM of this network and layer made by an earlier call (MONAI's GradCAM registers its hooks on the
            network for good, so a caller running many batches makes one and passes it).

    Returns:
        ``(maps, class_idx)``.
    """
    cam = cam or GradCAM(network, target_layers=target_layer, postprocessing=_identity)
    if class_idx is None:
        with torch.no_grad():
            was = network.training
            network.eval()
            class_idx = network(x).argmax(1)
            network.train(was)
    maps = torch.zeros((x.shape[0], 1, *x.shape[2:]), device=x.device)
    with torch.enable_grad():
        for c in class_idx.unique().tolist():
            sel = (class_idx == c).nonzero().flatten()
            maps[sel] = cam(x[sel], class_idx=int(c)).detach().float()
    network.zero_grad(set_to_none=True)
    return maps, class_idx


def _identity(m: torch.Tensor) -> torch.Tensor:
    return m


class AttentionInMask:
    """At an evaluator's epoch end, the share of each image's Grad-CAM attention inside its mask, and the mean.

    The models of the curricular pretraining paper (arXiv 2301.10687) put more of their Grad-CAM attention inside
    the lung fields than a model trained from scratch; this measures it on any classifier and any datalist with a
    mask per image (the chest phantom's lung masks). For each image: its Grad-CAM map for its top-scoring class
    (:func:`grad_cam`), then :func:`attention_share` with its mask resized to the image. The mean over the images
    with a non-empty map goes to ``engine.state.metrics[name]`` (where a MetricsLogger listed after this handler
    writes it, e.g. to ``test_metrics.jsonl``); with ``folder`` a CSV gives each image's file, class, share and the
    mask's area share (the share a map spread evenly over the image would have).

    Args:
        network: the classifier.
        loader: batches with ``image_key`` (the network's input) and ``mask_key`` (``B 1 H W``, same size).
        target_layer: see :func:`grad_cam`.
        image_key, mask_key: batch keys.
        name: metric name.
        folder: folder of the per-image CSV (None: none written).
        file_name: its name.
        device: where to run (default: the engine's ``state.device``, else the CPU).
    """

    def __init__(
        self,
        network: nn.Module,
        loader: Iterable[Mapping[str, Any]],
        target_layer: str = "class_layers.relu",
        image_key: str = "image",
        mask_key: str = "mask",
        name: str = "val_attention_in_mask",
        folder: str | os.PathLike | None = None,
        file_name: str = "attention_in_mask.csv",
        device: torch.device | str | None = None,
    ) -> None:
        self.network, self.loader, self.target_layer = network, loader, target_layer
        self.image_key, self.mask_key, self.name = image_key, mask_key, name
        self.path = None if folder is None else Path(folder) / file_name
        self.device = device
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def compute(self, device: torch.device | str) -> list[dict[str, Any]]:
        """Per-image rows ``{file, class, share, mask_area}`` over the loader.

        Raises:
            KeyError: a batch lacks the image or mask key.
            ValueError: a mask's size differs from its image's.
        """
        rows: list[dict[str, Any]] = []
        cam = GradCAM(self.network, target_layers=self.target_layer, postprocessing=_identity)
        for batch in self.loader:
            if self.image_key not in batch or self.mask_key not in batch:
                raise KeyError(f"attention batch lacks {self.image_key!r} or {self.mask_key!r} (has {sorted(batch)})")
            image = batch[self.image_key]
            files = _files(image)
            x = convert_to_tensor(image, track_meta=False).float().to(device)
            mask = convert_to_tensor(batch[self.mask_key], track_meta=False).float().to(device)
            if mask.shape[-2:] != x.shape[-2:]:
                raise ValueError(
                    f"mask size {tuple(mask.shape[-2:])} differs from the image size {tuple(x.shape[-2:])} ({files[:1]})"
                )
            maps, cls = grad_cam(self.network, x, self.target_layer, cam=cam)
            shares = attention_share(maps, mask[:, :1])
            area = (mask[:, :1] > 0.5).float().flatten(1).mean(1)
            for i in range(x.shape[0]):
                rows.append(
                    {"file": files[i], "class": int(cls[i]), "share": float(shares[i]), "mask_area": float(area[i])}
                )
        return rows

    def __call__(self, engine: Engine) -> None:
        device = self.device or getattr(engine.state, "device", None) or "cpu"
        self.rows = self.compute(device)
        valid = [r["share"] for r in self.rows if r["share"] == r["share"]]
        engine.state.metrics[self.name] = sum(valid) / len(valid) if valid else float("nan")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["file", "class", "share", "mask_area"])
                writer.writeheader()
                writer.writerows(self.rows)
            os.replace(tmp, self.path)


def _files(image: Any) -> list[str]:
    """The source file of each image of a batch (MetaTensor metadata), or empty strings."""
    names = getattr(image, "meta", {}).get("filename_or_obj") if hasattr(image, "meta") else None
    if names is None:
        return [""] * len(image)
    return [str(n) for n in (names if isinstance(names, (list, tuple)) else [names] * len(image))]
