"""``s4mi probe``: kNN and linear probes of a pretrained backbone checkpoint against random initialisation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.networks.nets import DenseNet

from s4mi.bundle import locate_bundle_root
from s4mi.data.prepare import prepare_datalist
from s4mi.handlers.pretrained import load_pretrained_backbone
from s4mi.handlers.probe import backbone_features, embed
from s4mi.networks import ViTClassifier
from s4mi.probe import knn_probe, linear_probe

__all__ = ["probe_checkpoint", "probe_table"]


def _bundle_parser(bundle: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> ConfigParser:
    given = Path(bundle)
    root = given if (given / "configs").is_dir() else Path(locate_bundle_root(str(bundle)))
    config = root / "configs" / "train.json"
    if not config.is_file():
        raise FileNotFoundError(f"s4mi probe: {config} not found (a bundle with a configs/train.json is needed)")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        if key not in parser:
            raise KeyError(f"s4mi probe: --set {key}: {config} defines no such key")
        parser[key] = value
    return parser


def probe_checkpoint(
    bundle: str | os.PathLike,
    ckpt: str | os.PathLike,
    datalist: str | os.PathLike | None = None,
    fraction: float | None = None,
    dataset_dir: str | os.PathLike | None = None,
    phantom_n: int | None = None,
    seed: int = 0,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 64,
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """kNN and linear probe scores on the validation set, for a random network and the pretrained one.

    The network (``network_def``), validation transforms (``validate#preprocessing``), phantom and label fraction
    are read from the bundle's ``configs/train.json`` with MONAI's :class:`~monai.bundle.ConfigParser`; the data
    is what the bundle trains on (:func:`s4mi.data.prepare.prepare_datalist`, without writing a split file): the
    probes are fitted on the labelled share of training and scored on validation (:mod:`s4mi.probe`). Both
    networks are built after ``torch.manual_seed(seed)``, so they differ only by the loaded backbone weights
    (:func:`s4mi.handlers.load_pretrained_backbone`). Multi-label when the bundle's loss is a BCE loss.

    Args:
        bundle: bundle name (under ``bundles/``) or folder.
        ckpt: the pretraining's ``models/pretrained.pt``.
        datalist: datalist JSON (default: the bundle's, i.e. its phantom).
        fraction: labelled share of training (default: the bundle's ``label_fraction``).
        dataset_dir: root of the datalist's relative paths (default: the bundle's).
        phantom_n: phantom size (default: the bundle's ``phantom_n``).
        seed: seed of the split and of the networks' initialisation.
        k: kNN neighbours.
        temperature: kNN temperature.
        batch_size: embedding batch size.
        device: where to embed.
        overrides: ``train.json`` keys to set first (e.g. ``{"finetune_backbone": "vit"}`` for CASS's ViT).

    Returns:
        ``{"random": scores, "pretrained": scores}``, scores named ``knn_<metric>`` and ``linear_<metric>``.

    Raises:
        TypeError: the bundle's network is neither a MONAI DenseNet nor an s4mi ViTClassifier (a classification bundle).
        ValueError: the probe or validation set is empty.
    """
    parser = _bundle_parser(bundle, overrides)
    get = parser.get_parsed_content
    data = prepare_datalist(
        get("dataset_dir") if dataset_dir is None else dataset_dir,
        get("datalist") if datalist is None else datalist,
        get("phantom"),
        float(get("label_fraction")) if fraction is None else fraction,
        seed,
        int(get("phantom_n")) if phantom_n is None else phantom_n,
    )
    labelled = [d for d in data.get("training", []) if "label" in d]
    validation = data.get("validation", [])
    if not labelled or not validation:
        raise ValueError(
            f"s4mi probe: {len(labelled)} labelled training and {len(validation)} validation items; both are needed"
        )
    transform = get("validate#preprocessing")
    loaders = [DataLoader(Dataset(items, transform), batch_size=batch_size) for items in (labelled, validation)]
    multilabel = "BCE" in str(parser.get("loss", {}).get("_target_", ""))
    out: dict[str, dict[str, float]] = {}
    for name in ("random", "pretrained"):
        torch.manual_seed(seed)
        net: Any = get("network_def", lazy=False)
        if not isinstance(net, (DenseNet, ViTClassifier)):
            raise TypeError(
                f"s4mi probe: {bundle}'s network_def is a {type(net).__name__}, not a MONAI DenseNet or an s4mi "
                "ViTClassifier"
            )
        if name == "pretrained":
            exclude = tuple(get("pretrained_exclude") if "pretrained_exclude" in parser else ["class_layers.out."])
            key = get("pretrained_key") if "pretrained_key" in parser else "model"
            load_pretrained_backbone(net, ckpt, exclude=exclude, key=key)
        features = backbone_features(net.to(device))
        (train_f, train_y), (val_f, val_y) = (embed(features, loader, device) for loader in loaders)
        knn = knn_probe(train_f, train_y, val_f, val_y, None, k, temperature, multilabel)
        lin = linear_probe(train_f, train_y, val_f, val_y, multilabel=multilabel, seed=seed)
        out[name] = {**{f"knn_{m}": v for m, v in knn.items()}, **{f"linear_{m}": v for m, v in lin.items()}}
    return out


def probe_table(scores: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per backbone, one column per score."""
    columns = list(next(iter(scores.values())))
    lines = ["| backbone | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)
