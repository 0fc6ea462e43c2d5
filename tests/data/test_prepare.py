"""Tests for s4mi.data.prepare: a datalist that records its split is used as it is, and a run splits once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import s4mi.data.prepare as prepare
from s4mi.cli import main as cli
from s4mi.data.datalist import load_datalist, save_datalist
from s4mi.data.prepare import inference_items, prepare_datalist
from s4mi.data.split import label_fraction_split, pranet_protocol

SPLIT_ORIGIN = "split_origin"  # s4mi.data.prepare.SPLIT_ORIGIN, spelled out: the saved file's format
N_TRAIN = 20  # 10 % of 20 is 2 labelled items; splitting those again at 10 % would leave 1


def _touch(root: Path, rel: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return rel


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A segmentation datalist of empty files: ``N_TRAIN`` training and 3 test items; returns (folder, datalist)."""
    root = tmp_path / "data"
    data: dict[str, Any] = {
        "task": "segmentation",
        "training": [
            {"image": _touch(root, f"img/{i:02d}.png"), "label": _touch(root, f"mask/{i:02d}.png")}
            for i in range(N_TRAIN)
        ],
        "test": [{"image": _touch(root, f"test/{i}.png"), "label": _touch(root, f"test/{i}_m.png")} for i in range(3)],
    }
    return root, save_datalist(data, root / "datalist.json")


def _split_file(root: Path, source: Path, fraction: float, seed: int = 7, name: str = "split10.json") -> Path:
    """``source`` split at ``fraction`` by label_fraction_split, saved next to it (relative paths)."""
    raw = json.loads(source.read_text())
    return save_datalist(label_fraction_split(raw, fraction, seed=seed), root / name)


def _images(items: list[dict[str, Any]]) -> list[str]:
    return [item["image"] for item in items]


# --------------------------------------------------------------------------------------------------------------------
# a datalist that records its split


def test_a_split_datalist_is_used_as_it_is(dataset: tuple[Path, Path]) -> None:
    """README's flow: `s4mi split --fraction 0.1`, then a bundle at its default label_fraction 0.1 (seed 0)."""
    root, source = dataset
    out = root / "split10.json"
    cli(["split", str(source), "--fraction", "0.1", "--seed", "3", "--out", str(out)])
    recorded = load_datalist(out)
    assert len(recorded["training"]) == 2 and len(recorded["unlabeled"]) == N_TRAIN - 2

    data = prepare_datalist(root, out, label_fraction=0.1, seed=0)
    assert data["training"] == recorded["training"], "the recorded labelled items, not 10 % of them"
    assert data["unlabeled"] == recorded["unlabeled"]
    assert data["test"] == recorded["test"]
    assert data["split"] == recorded["split"]
    assert all(Path(p).is_absolute() for p in _images(data["training"] + data["unlabeled"] + data["test"]))


def test_a_protocol_split_is_used_as_it_is(dataset: tuple[Path, Path]) -> None:
    root, source = dataset
    out = save_datalist(pranet_protocol(json.loads(source.read_text()), labelled_fraction=0.2), root / "pranet.json")
    recorded = load_datalist(out)
    data = prepare_datalist("", out, label_fraction=0.2, seed=0)
    assert data["training"] == recorded["training"] and data["validation"] == recorded["validation"]
    assert data["unlabeled"] == recorded["unlabeled"]


def test_the_recorded_fraction_is_compared_with_a_tolerance(dataset: tuple[Path, Path]) -> None:
    root, source = dataset
    out = _split_file(root, source, 0.1)
    data = prepare_datalist(root, out, label_fraction=0.3 / 3, seed=0)  # 0.09999999999999999
    assert data["training"] == load_datalist(out)["training"]


@pytest.mark.parametrize("label_fraction", [0.2, 0.05, 1.0])
def test_a_disagreeing_label_fraction_is_an_error(dataset: tuple[Path, Path], label_fraction: float) -> None:
    """1.0 is a supervised bundle's default: label_fraction is the share of the original training set."""
    root, source = dataset
    out = _split_file(root, source, 0.1, seed=7)
    with pytest.raises(ValueError) as info:
        prepare_datalist(root, out, label_fraction=label_fraction, seed=0)
    message = str(info.value)
    assert str(out.resolve()) in message
    assert "label fraction 0.1 " in message and f"label_fraction is {label_fraction!r}" in message
    assert "seed 7" in message, "the recorded seed is shown"
    assert "pass --label_fraction 0.1" in message and "unsplit datalist" in message


def test_the_seed_of_a_recorded_split_is_not_compared(dataset: tuple[Path, Path]) -> None:
    root, source = dataset
    out = _split_file(root, source, 0.1, seed=7)
    assert prepare_datalist(root, out, label_fraction=0.1, seed=1)["training"] == load_datalist(out)["training"]


def test_label_fraction_is_checked(dataset: tuple[Path, Path]) -> None:
    root, source = dataset
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\]"):
            prepare_datalist(root, source, label_fraction=bad)


def test_inference_takes_a_split_datalist_as_it_is(dataset: tuple[Path, Path]) -> None:
    root, source = dataset
    out = _split_file(root, source, 0.1)
    items = inference_items("", root, out)
    assert items == [{"image": str(root / "test" / f"{i}.png")} for i in range(3)]


# --------------------------------------------------------------------------------------------------------------------
# one split per run: output_dir/split.json


def test_the_split_file_is_saved_with_its_origin_and_reused(
    dataset: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, source = dataset
    split_file = tmp_path / "run" / "split.json"
    first = prepare_datalist(root, source, label_fraction=0.1, seed=0, split_file=split_file)
    assert len(first["training"]) == 2 and len(first["unlabeled"]) == N_TRAIN - 2
    saved = json.loads(split_file.read_text())
    origin = saved[SPLIT_ORIGIN]
    assert origin["source"] == f"datalist {source.resolve()} (dataset_dir {root})"
    assert origin["label_fraction"] == 0.1 and origin["seed"] == 0 and len(origin["sha256"]) == 64
    assert saved["split"]["n_labeled"] == 2, "readers of split.json find the split record"
    assert [p.name for p in split_file.parent.iterdir()] == ["split.json"], "no temporary file left"

    def no_second_split(*args: Any, **kwargs: Any) -> dict:
        raise AssertionError("the run's split was computed again")

    monkeypatch.setattr(prepare, "label_fraction_split", no_second_split)
    mtime = split_file.stat().st_mtime_ns
    second = prepare_datalist(root, source, label_fraction=0.1, seed=0, split_file=split_file)
    assert second == first
    assert SPLIT_ORIGIN not in second
    assert split_file.stat().st_mtime_ns == mtime, "the saved split is not rewritten"


def test_a_split_file_of_another_run_is_an_error(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, source = dataset
    split_file = tmp_path / "run" / "split.json"
    prepare_datalist(root, source, label_fraction=0.1, seed=0, split_file=split_file)
    other = save_datalist(json.loads(source.read_text()), root / "other.json")  # same content, another file
    asks = [
        ({"datalist": source, "label_fraction": 0.2, "seed": 0}, "label_fraction"),
        ({"datalist": source, "label_fraction": 0.1, "seed": 1}, "seed"),
        ({"datalist": other, "label_fraction": 0.1, "seed": 0}, "source"),
    ]
    for kwargs, differ in asks:
        with pytest.raises(ValueError) as info:
            prepare_datalist(root, split_file=split_file, **kwargs)  # type: ignore[arg-type]
        message = str(info.value)
        assert f"split file {split_file} belongs to another run" in message
        assert "label_fraction 0.1, seed 0" in message, "what the file records"
        assert f"they differ in {differ}" in message
        assert "--output_dir" in message and f"delete {split_file}" in message


def test_an_edited_datalist_does_not_reuse_a_stale_split(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, source = dataset
    split_file = tmp_path / "split.json"
    prepare_datalist(root, source, label_fraction=0.1, split_file=split_file)
    data = json.loads(source.read_text())
    data["training"].pop()
    save_datalist(data, source)
    with pytest.raises(ValueError, match="they differ in sha256"):
        prepare_datalist(root, source, label_fraction=0.1, split_file=split_file)


def test_a_run_without_a_split_is_recorded_too(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, source = dataset
    split_file = tmp_path / "split.json"
    data = prepare_datalist(root, source, label_fraction=1.0, split_file=split_file)
    assert len(data["training"]) == N_TRAIN and not data["unlabeled"]
    assert json.loads(split_file.read_text())[SPLIT_ORIGIN]["label_fraction"] == 1.0
    with pytest.raises(ValueError, match="they differ in label_fraction"):
        prepare_datalist(root, source, label_fraction=0.1, split_file=split_file)


def test_a_split_datalist_is_saved_and_reused_as_it_is(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, source = dataset
    out = _split_file(root, source, 0.1)
    split_file = tmp_path / "split.json"
    first = prepare_datalist(root, out, label_fraction=0.1, split_file=split_file)
    assert first["training"] == load_datalist(out)["training"]
    assert prepare_datalist(root, out, label_fraction=0.1, split_file=split_file) == first
    with pytest.raises(ValueError, match="pass --label_fraction 0.1"):  # the datalist's own check comes first
        prepare_datalist(root, out, label_fraction=0.2, split_file=split_file)


def test_a_split_file_that_records_no_origin_is_an_error(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    root, source = dataset
    split_file = save_datalist(load_datalist(source), tmp_path / "split.json")  # as an older s4mi wrote it
    with pytest.raises(ValueError, match=f"split file {split_file} exists but records no 'split_origin'"):
        prepare_datalist(root, source, label_fraction=0.1, split_file=split_file)


def test_a_phantom_run_records_the_phantom(tmp_path: Path) -> None:
    phantom_dir = tmp_path / "polyp"
    split_file = tmp_path / "split.json"
    data = prepare_datalist(phantom_dir, "", "polyp", 0.5, 0, 10, phantom_size=32, split_file=split_file)
    assert len(data["training"]) + len(data["unlabeled"]) == 7
    origin = json.loads(split_file.read_text())[SPLIT_ORIGIN]
    assert origin["source"] == "phantom polyp (n=10, image_size=32)"
    assert prepare_datalist(phantom_dir, "", "polyp", 0.5, 0, 10, phantom_size=32, split_file=split_file) == data
    with pytest.raises(ValueError, match="they differ in source, sha256"):
        prepare_datalist(phantom_dir / "n12", "", "polyp", 0.5, 0, 12, phantom_size=32, split_file=split_file)


def test_split_strategy_first_takes_the_first_items_and_is_recorded(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    """The S4MI protocol labels the first N training items; the strategy goes in the split file's origin."""
    root, source = dataset
    split_file = tmp_path / "run" / "split.json"
    data = prepare_datalist(root, source, label_fraction=0.3, seed=5, split_file=split_file, split_strategy="first")
    raw = json.loads(source.read_text())
    assert _images(data["training"]) == [str(root / i["image"]) for i in raw["training"][:6]]
    assert json.loads(split_file.read_text())[SPLIT_ORIGIN]["split_strategy"] == "first"
    again = prepare_datalist(root, source, label_fraction=0.3, seed=5, split_file=split_file, split_strategy="first")
    assert _images(again["training"]) == _images(data["training"])
    with pytest.raises(ValueError, match="they differ in split_strategy"):
        prepare_datalist(root, source, label_fraction=0.3, seed=5, split_file=split_file)
    randomly = prepare_datalist(root, source, label_fraction=0.3, seed=5, split_strategy="random")
    assert _images(randomly["training"]) != _images(data["training"])


def test_select_classes_keeps_the_named_findings_in_order() -> None:
    from s4mi.data.prepare import select_classes

    data = {
        "training": [{"image": "a.png", "label": [0, 1, 0, 0, 1, 1]}, {"image": "b.png", "label": [1, 0, 0, 0, 0, 0]}],
        "unlabeled": [{"image": "c.png"}],
        "split": {"fraction": 0.5},
    }
    assert select_classes(data, None) == data
    out = select_classes(data, [5])
    assert [d["label"] for d in out["training"]] == [[1], [0]]
    assert out["unlabeled"] == data["unlabeled"] and out["split"] == data["split"]
    assert [d["label"] for d in select_classes(data, [4, 0])["training"]] == [[1, 0], [0, 1]]
    assert data["training"][0]["label"] == [0, 1, 0, 0, 1, 1], "the input datalist is left as it was"
    with pytest.raises(ValueError, match="has 6 classes, no class \\[6\\]"):
        select_classes(data, [6])
    with pytest.raises(ValueError, match="once"):
        select_classes(data, [1, 1])
    with pytest.raises(ValueError, match="'m.png' has the label 'm_seg.png', not a class vector"):
        select_classes({"training": [{"image": "m.png", "label": "m_seg.png"}]}, [0])
