"""Per-test-set metrics (PraNet protocol): per-image Dice/IoU averaged per set, then the plain mean of the sets."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, MeanIoUHandler, from_engine
from monai.transforms import AsDiscreted
from torch.utils.data import DataLoader

from s4mi.handlers import PerSourceMetrics


def _naive_dice(p: torch.Tensor, g: torch.Tensor) -> float:
    inter = float((p * g).sum())
    return 2 * inter / float(p.sum() + g.sum())


def _naive_iou(p: torch.Tensor, g: torch.Tensor) -> float:
    inter = float((p * g).sum())
    return inter / float(p.sum() + g.sum() - inter)


def _evaluate(sources: list[str] | None) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(7):
        item = {"image": torch.rand(1, 8, 8, generator=g), "label": (torch.rand(1, 8, 8, generator=g) > 0.6).float()}
        if sources is not None:
            item["source"] = sources[i]
        items.append(item)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(items, batch_size=3),
        network=torch.nn.Identity(),
        postprocessing=AsDiscreted(keys="pred", threshold=0.5),
        key_val_metric={
            "val_mean_dice": MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))
        },
        additional_metrics={
            "val_mean_iou": MeanIoUHandler(include_background=True, output_transform=from_engine(["pred", "label"]))
        },
        val_handlers=[PerSourceMetrics(["val_mean_dice", "val_mean_iou"])],
    )
    evaluator.run()
    return evaluator.state.metrics, items


def test_per_set_means_and_mean_of_sets_match_a_naive_reference() -> None:
    sources = ["Kvasir", "Kvasir", "ETIS", "Kvasir", "ETIS", "CVC-300", "ETIS"]
    metrics, items = _evaluate(sources)
    for name, fn in (("val_mean_dice", _naive_dice), ("val_mean_iou", _naive_iou)):
        per_set = {}
        for s in ("Kvasir", "ETIS", "CVC-300"):
            scores = [fn((it["image"] > 0.5).float(), it["label"]) for it in items if it["source"] == s]
            per_set[s] = sum(scores) / len(scores)
            assert metrics[f"{name}/{s}"] == pytest.approx(per_set[s], rel=1e-5)
        assert metrics[f"{name}/mean_of_sets"] == pytest.approx(sum(per_set.values()) / 3, rel=1e-5)
        # the plain mean of the sets differs from MONAI's mean over all images (the sets differ in size)
        all_images = sum(fn((it["image"] > 0.5).float(), it["label"]) for it in items) / len(items)
        assert metrics[name] == pytest.approx(all_images, rel=1e-5)


def test_one_or_no_source_adds_nothing() -> None:
    for sources in (None, ["a"] * 7):
        metrics, _ = _evaluate(sources)
        assert sorted(metrics) == ["val_mean_dice", "val_mean_iou"]
