"""Tests for s4mi.data.split: seeded label-fraction splits and the named protocols."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from s4mi.data.datalist import LABEL_KEYS, DatalistError, save_datalist, validate_datalist
from s4mi.data.split import (
    isic2018_protocol,
    label_fraction_split,
    pranet_protocol,
    round_half_up,
    split_validation,
)

ISIC_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
ISIC_COUNTS = [1113, 6705, 514, 327, 1099, 115, 142]  # the ISIC 2018 Task 3 training set, 10015 images


def _multiclass(counts: list[int], seed: int = 0) -> dict[str, Any]:
    classes = [f"c{i}" for i in range(len(counts))]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    random.Random(seed).shuffle(labels)
    training = [
        {"image": f"img/{i:05d}.jpg", "label": [int(j == c) for j in range(len(counts))], "id": f"ID_{i:05d}"}
        for i, c in enumerate(labels)
    ]
    return {"name": "mc", "task": "multiclass", "classes": classes, "training": training}


def _multilabel(n: int = 400, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    prevalence = [0.3, 0.1, 0.02, 0.005, 0.2]  # class 3 is rare: ~2 positives
    training = []
    for i in range(n):
        label = [int(rng.random() < p) for p in prevalence]
        if rng.random() < 0.05:
            label[0] = -1  # U-Ignore
        training.append({"image": f"cxr/{i:04d}.png", "label": label, "patient": f"P{i // 3}"})
    training[0]["label"] = [0, 0, 0, 1, 0]  # ensure the rare class exists
    return {"task": "multilabel", "classes": ["a", "b", "c", "d", "e"], "training": training}


def _segmentation(n: int, test: int = 0) -> dict[str, Any]:
    return {
        "task": "segmentation",
        "training": [{"image": f"img/{i}.png", "label": f"mask/{i}.png"} for i in range(n)],
        "test": [{"image": f"test/{i}.png", "label": f"test_mask/{i}.png"} for i in range(test)],
    }


def _assert_unlabeled_clean(dl: dict[str, Any]) -> None:
    for item in dl["unlabeled"]:
        assert not set(item) & set(LABEL_KEYS), item
        assert "image" in item
    validate_datalist(dl, check_files=False, require_training=True)


def _images(items: list[dict[str, Any]]) -> list[str]:
    return [item["image"] for item in items]


# --------------------------------------------------------------------------------------------------------------------
# label_fraction_split


def test_round_half_up() -> None:
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 2.4999, 0.2 * 1305, 0.1 * 1450)] == [1, 2, 3, 2, 261, 145]


@pytest.mark.parametrize("strategy", ["auto", "union", "stratified", "random", "first"])
def test_same_seed_same_bytes(tmp_path: Path, strategy: str) -> None:
    dl = _multilabel()
    a = save_datalist(label_fraction_split(dl, 0.5, seed=7, strategy=strategy), tmp_path / "a.json").read_bytes()
    b = save_datalist(label_fraction_split(copy.deepcopy(dl), 0.5, seed=7, strategy=strategy), tmp_path / "b.json")
    assert a == b.read_bytes()
    if strategy != "first":
        c = save_datalist(label_fraction_split(dl, 0.5, seed=8, strategy=strategy), tmp_path / "c.json").read_bytes()
        assert a != c


def test_input_not_modified() -> None:
    dl = _multilabel()
    before = copy.deepcopy(dl)
    label_fraction_split(dl, 0.2, seed=1)
    assert dl == before


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("strategy", ["random", "first"])
def test_random_and_first_hit_fraction(fraction: float, strategy: str) -> None:
    dl = _segmentation(237)
    out = label_fraction_split(dl, fraction, seed=3, strategy=strategy)
    expected = max(1, round_half_up(fraction * 237))
    assert len(out["training"]) == expected
    assert len(out["unlabeled"]) == 237 - expected
    assert out["split"] == {
        "fraction": fraction,
        "seed": 3,
        "strategy": strategy,
        "n_labeled": expected,
        "n_unlabeled": 237 - expected,
    }
    # every image ends up exactly once, in file order within each section
    assert sorted(_images(out["training"]) + _images(out["unlabeled"])) == sorted(_images(dl["training"]))
    assert out["training"] == sorted(out["training"], key=lambda item: int(Path(item["image"]).stem))
    _assert_unlabeled_clean(out)


def test_first_takes_file_order() -> None:
    out = label_fraction_split(_segmentation(10), 0.3, strategy="first")
    assert _images(out["training"]) == ["img/0.png", "img/1.png", "img/2.png"]


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2, 0.5])
def test_stratified_keeps_every_class_and_fraction(fraction: float) -> None:
    counts = [500, 120, 40, 7, 2]
    dl = _multiclass(counts)
    out = label_fraction_split(dl, fraction, seed=11, strategy="stratified")
    labelled = Counter(item["label"].index(1) for item in out["training"])
    assert set(labelled) == set(range(len(counts))), "every class keeps at least one labelled image"
    n = sum(counts)
    target = round_half_up(fraction * n)
    assert target <= len(out["training"]) <= target + len(counts)
    for c, n_c in enumerate(counts):
        assert abs(labelled[c] - fraction * n_c) <= 1 or labelled[c] == 1
    assert out["split"]["strategy"] == "stratified"
    _assert_unlabeled_clean(out)


def test_auto_strategy_from_task() -> None:
    assert label_fraction_split(_multiclass([30, 20]), 0.5)["split"]["strategy"] == "stratified"
    assert label_fraction_split(_multilabel(), 0.5)["split"]["strategy"] == "union"
    assert label_fraction_split(_segmentation(10), 0.5)["split"]["strategy"] == "random"
    no_task = _multiclass([30, 20])
    del no_task["task"]
    assert label_fraction_split(no_task, 0.5)["split"]["strategy"] == "stratified"


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3])
def test_union_covers_every_class(fraction: float) -> None:
    dl = _multilabel(n=600, seed=5)
    out = label_fraction_split(dl, fraction, seed=2, strategy="union")
    vectors = [item["label"] for item in dl["training"]]
    labelled = [item["label"] for item in out["training"]]
    for c in range(5):
        n_pos = sum(v[c] == 1 for v in vectors)
        got = sum(v[c] == 1 for v in labelled)
        if n_pos:
            assert got >= max(1, round_half_up(fraction * n_pos)), f"class {c}: {got} of {n_pos}"
    n_none = sum(1 not in v for v in vectors)
    assert sum(1 not in v for v in labelled) == max(1, round_half_up(fraction * n_none))
    assert out["split"]["n_labeled"] == len(out["training"]) >= round_half_up(fraction * len(vectors))
    _assert_unlabeled_clean(out)


def test_union_keeps_metadata_strips_labels() -> None:
    out = label_fraction_split(_multilabel(), 0.2, seed=0)
    assert all(set(item) == {"image", "patient"} for item in out["unlabeled"])
    assert all(set(item) == {"image", "label", "patient"} for item in out["training"])


def test_existing_unlabeled_kept_after_moved_items() -> None:
    dl = _segmentation(10)
    dl["unlabeled"] = [{"image": "extra/0.png"}, {"image": "extra/1.png"}]
    dl["validation"] = [{"image": "v.png", "label": "vm.png"}]
    out = label_fraction_split(dl, 0.5, seed=0)
    assert _images(out["unlabeled"])[-2:] == ["extra/0.png", "extra/1.png"]
    assert len(out["unlabeled"]) == 7 and out["split"]["n_unlabeled"] == 7
    assert out["validation"] == dl["validation"]
    assert list(out) == ["task", "split", "training", "unlabeled", "validation", "test"]


def test_fraction_one_keeps_everything() -> None:
    for dl in (_multilabel(), _multiclass([5, 3]), _segmentation(9)):
        out = label_fraction_split(dl, 1.0, seed=4)
        assert out["training"] == dl["training"]
        assert out["unlabeled"] == []


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, float("nan"), 2])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        label_fraction_split(_segmentation(5), fraction)


def test_bad_strategy_and_inputs() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        label_fraction_split(_segmentation(5), 0.5, strategy="kmeans")
    with pytest.raises(ValueError, match="classification labels"):
        label_fraction_split(_segmentation(5), 0.5, strategy="union")
    with pytest.raises(DatalistError, match="empty"):
        label_fraction_split({"task": "segmentation", "training": []}, 0.5)
    with pytest.raises(DatalistError, match="item 0"):
        label_fraction_split({"training": [{"label": [1]}]}, 0.5)


def test_class_name_labels_are_split() -> None:
    dl = {
        "task": "multilabel",
        "classes": ["nodule", "mass"],
        "training": [{"image": f"{i}.png", "label": ["nodule"] if i % 2 else ["mass"]} for i in range(20)],
    }
    out = label_fraction_split(dl, 0.2, seed=0)
    names = {name for item in out["training"] for name in item["label"]}
    assert names == {"nodule", "mass"}
    _assert_unlabeled_clean(out)


# --------------------------------------------------------------------------------------------------------------------
# split_validation


def test_split_validation() -> None:
    dl = _segmentation(1450)
    dl["validation"] = [{"image": "old.png", "label": "old_mask.png"}]
    out = split_validation(dl, 0.1, seed=1)
    assert len(out["training"]) == 1305 and len(out["validation"]) == 146
    assert out["validation"][0]["image"] == "old.png"
    assert out["validation_split"]["n_validation"] == 146
    assert sorted(_images(out["training"]) + _images(out["validation"][1:])) == sorted(_images(dl["training"]))
    assert split_validation(dl, 0.1, seed=1) == out
    assert split_validation(dl, 0.1, seed=2) != out
    assert split_validation(dl, 0.0, seed=1)["training"] == dl["training"]
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(dl, 1.0, seed=1)


def test_split_validation_stratified() -> None:
    out = split_validation(_multiclass([80, 15, 5]), 0.2, seed=0, strategy="auto")
    assert out["validation_split"]["strategy"] == "stratified"
    counts = Counter(item["label"].index(1) for item in out["validation"])
    assert counts == {0: 16, 1: 3, 2: 1}


# --------------------------------------------------------------------------------------------------------------------
# protocols


def test_pranet_protocol_sizes(tmp_path: Path) -> None:
    dl = _segmentation(1450, test=798)
    out = pranet_protocol(dl)
    assert (len(out["validation"]), len(out["training"]), len(out["unlabeled"])) == (145, 261, 1044)
    assert out["test"] == dl["test"]
    assert out["split"] == {
        "protocol": "pranet",
        "fraction": 0.2,
        "seed": 2022,
        "strategy": "random",
        "val_fraction": 0.1,
        "n_labeled": 261,
        "n_unlabeled": 1044,
        "n_validation": 145,
    }
    pool = _images(out["validation"]) + _images(out["training"]) + _images(out["unlabeled"])
    assert sorted(pool) == sorted(_images(dl["training"]))
    _assert_unlabeled_clean(out)
    a = save_datalist(out, tmp_path / "a.json").read_bytes()
    assert a == save_datalist(pranet_protocol(dl), tmp_path / "b.json").read_bytes()
    assert a != save_datalist(pranet_protocol(dl, seed=1), tmp_path / "c.json").read_bytes()


def test_isic2018_protocol_sizes() -> None:
    dl = _multiclass(ISIC_COUNTS, seed=3)
    dl["classes"] = list(ISIC_CLASSES)
    # pooled in order training + validation + test
    dl["validation"], dl["test"] = dl["training"][9000:9500], dl["training"][9500:]
    dl["training"] = dl["training"][:9000]
    out = isic2018_protocol(dl)
    n = 10015
    n_train, n_val = round_half_up(0.7 * n), round_half_up(0.1 * n)
    assert (n_train, n_val, n - n_train - n_val) == (7011, 1002, 2002)
    assert len(out["training"]) + len(out["unlabeled"]) == n_train
    assert len(out["validation"]) == n_val and len(out["test"]) == n - n_train - n_val
    assert len(out["training"]) == round_half_up(0.2 * n_train) == 1402
    assert out["split"]["n_labeled"] == 1402 and out["split"]["n_unlabeled"] == n_train - 1402
    assert out["split"]["protocol"] == "isic2018" and out["split"]["strategy"] == "first"

    # stratified: each class's share in every part is within one image of its 7:1:2 quota
    ids = {item["id"]: item["label"].index(1) for item in dl["training"] + dl["validation"] + dl["test"]}
    train_ids = [item["id"] for item in out["training"] + out["unlabeled"]]
    for part, ratio in ((train_ids, 0.7), ([item["id"] for item in out["validation"]], 0.1)):
        counts = Counter(ids[i] for i in part)
        for c, n_c in enumerate(ISIC_COUNTS):
            assert abs(counts[c] - ratio * n_c) < 1 + 1e-9, (c, counts[c], ratio * n_c)

    # the labelled images are the FIRST 20% of the train part in the original (id) order
    pool_order = {item["id"]: k for k, item in enumerate(dl["training"] + dl["validation"] + dl["test"])}
    assert train_ids == sorted(train_ids, key=pool_order.__getitem__)
    assert [item["id"] for item in out["training"]] == train_ids[:1402]
    assert all(set(item) == {"image", "id"} for item in out["unlabeled"])
    assert isic2018_protocol(dl) == out and isic2018_protocol(dl, seed=1) != out


def test_isic2018_protocol_needs_labels() -> None:
    dl = _multiclass([20, 10])
    dl["test"] = [{"image": "unlabelled-test.jpg"}]
    with pytest.raises(DatalistError, match="section 'test', item 0"):
        isic2018_protocol(dl)
    with pytest.raises(ValueError, match="classification"):
        isic2018_protocol(_segmentation(20))


def test_isic2018_small_pool_math() -> None:
    dl = _multiclass([50, 30, 20])
    out = isic2018_protocol(dl, labelled_fraction=0.1, seed=5)
    assert len(out["training"]) + len(out["unlabeled"]) == 70
    assert (len(out["validation"]), len(out["test"])) == (10, 20)
    assert len(out["training"]) == 7
    assert math.isclose(out["split"]["fraction"], 0.1)
