"""Tests for s4mi.data.datalist: loading, validation, path resolution, saving and task inference."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from s4mi.data.datalist import (
    LABEL_KEYS,
    SECTIONS,
    DatalistError,
    infer_task,
    label_to_vector,
    load_datalist,
    relativize,
    save_datalist,
    strip_labels,
    validate_datalist,
)

CLASSES = ["nodule", "mass", "effusion"]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def _multilabel() -> dict[str, Any]:
    return {
        "name": "toy",
        "task": "multilabel",
        "classes": list(CLASSES),
        "training": [
            {"image": "img/a.png", "label": [1, 0, 0], "id": "a"},
            {"image": "img/b.png", "label": [0, 1, -1], "mask": "masks/b.png"},
        ],
        "unlabeled": [{"image": "img/c.png", "patient": "p3"}],
        "validation": [{"image": "img/d.png", "label": [0, 0, 0]}],
        "test": [{"image": "img/e.png"}],
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    _touch(tmp_path, "img/a.png", "img/b.png", "img/c.png", "img/d.png", "img/e.png", "masks/b.png")
    return tmp_path


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def _raises(datalist: Any, *fragments: str, **kwargs: Any) -> DatalistError:
    with pytest.raises(DatalistError) as info:
        validate_datalist(datalist, source="dl.json", check_files=False, **kwargs)
    message = str(info.value)
    for fragment in ("dl.json", *fragments):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return info.value


# --------------------------------------------------------------------------------------------------------------------
# loading and resolution


def test_load_resolves_relative_to_json_folder(dataset: Path) -> None:
    path = _write(dataset / "datalist.json", _multilabel())
    dl = load_datalist(path)
    assert dl["name"] == "toy" and dl["classes"] == CLASSES
    assert dl["training"][0]["image"] == str(dataset / "img" / "a.png")
    assert dl["training"][1]["mask"] == str(dataset / "masks" / "b.png")
    assert dl["training"][0]["id"] == "a"
    assert dl["training"][1]["label"] == [0, 1, -1]
    assert all(os.path.isabs(item["image"]) for s in SECTIONS for item in dl[s])


def test_load_with_explicit_dataset_dir_and_dict(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("lists") / "dl.json"
    _write(elsewhere, _multilabel())
    dl = load_datalist(elsewhere, dataset_dir=dataset)
    assert dl["validation"][0]["image"] == str(dataset / "img" / "d.png")

    raw = _multilabel()
    dl2 = load_datalist(raw, dataset_dir=dataset)
    assert dl2 == dl
    assert raw == _multilabel(), "the input dict must not be modified"


def test_load_keeps_absolute_paths_and_normalises(dataset: Path) -> None:
    raw = _multilabel()
    raw["training"][0]["image"] = str(dataset / "img" / "a.png")
    raw["training"][1]["image"] = "img/../img/b.png"
    dl = load_datalist(raw, dataset_dir=dataset)
    assert dl["training"][0]["image"] == str(dataset / "img" / "a.png")
    assert dl["training"][1]["image"] == str(dataset / "img" / "b.png")


def test_load_fills_missing_sections_and_selects(dataset: Path) -> None:
    raw = {"classes": CLASSES, "training": [{"image": "img/a.png", "label": [1, 0, 0]}]}
    dl = load_datalist(raw, dataset_dir=dataset)
    assert [dl[s] for s in ("unlabeled", "validation", "test")] == [[], [], []]

    raw = _multilabel()
    raw["test"] = [{"image": "missing/not-downloaded.png"}]
    dl = load_datalist(raw, dataset_dir=dataset, sections=["training", "unlabeled"])
    assert set(dl) & set(SECTIONS) == {"training", "unlabeled"}
    with pytest.raises(ValueError, match="unknown section"):
        load_datalist(raw, dataset_dir=dataset, sections=["train"])


def test_image_list_and_directory(dataset: Path) -> None:
    _touch(dataset, "series/1.dcm", "series/2.dcm")
    raw = {
        "task": "multiclass",
        "classes": ["a", "b"],
        "training": [
            {"image": ["series/1.dcm", "series/2.dcm"], "label": [0, 1]},
            {"image": "series", "label": [1, 0]},
        ],
    }
    dl = load_datalist(raw, dataset_dir=dataset)
    assert dl["training"][0]["image"] == [str(dataset / "series" / "1.dcm"), str(dataset / "series" / "2.dcm")]
    assert dl["training"][1]["image"] == str(dataset / "series")


def test_segmentation_label_path_resolved(dataset: Path) -> None:
    raw = {"task": "segmentation", "training": [{"image": "img/a.png", "label": "masks/b.png"}]}
    dl = load_datalist(raw, dataset_dir=dataset)
    assert dl["training"][0]["label"] == str(dataset / "masks" / "b.png")


def test_missing_file_names_section_index_key(dataset: Path) -> None:
    raw = _multilabel()
    raw["validation"][0]["image"] = "img/nope.png"
    path = _write(dataset / "dl.json", raw)
    with pytest.raises(DatalistError) as info:
        load_datalist(path)
    err = info.value
    assert (err.section, err.index, err.key) == ("validation", 0, "image")
    assert str(path) in str(err) and "nope.png" in str(err) and "not found" in str(err)
    load_datalist(path, check_files=False)  # no error without the file check

    raw = _multilabel()
    raw["training"][1]["mask"] = "masks/none.png"
    with pytest.raises(DatalistError, match=r"section 'training', item 1, key 'mask'"):
        load_datalist(raw, dataset_dir=dataset)


def test_missing_file_in_image_list(dataset: Path) -> None:
    raw = {"classes": ["a"], "training": [{"image": ["img/a.png", "img/zz.png"], "label": [1]}]}
    with pytest.raises(DatalistError, match="zz.png"):
        load_datalist(raw, dataset_dir=dataset)


# --------------------------------------------------------------------------------------------------------------------
# JSON errors


def test_invalid_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "training": [\n    {"image": "a.png",}\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(DatalistError) as info:
        load_datalist(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "column" in message


def test_unreadable_and_non_object_json(tmp_path: Path) -> None:
    with pytest.raises(DatalistError, match="cannot read"):
        load_datalist(tmp_path / "absent.json")
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DatalistError, match="top level must be a JSON object"):
        load_datalist(path)
    path.write_bytes(b'{"name": "\xff"}')
    with pytest.raises(DatalistError, match="UTF-8"):
        load_datalist(path)


def test_duplicate_json_keys_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"training": [{"image": "a", "label": [1]}], "training": []}', encoding="utf-8")
    with pytest.raises(DatalistError, match="duplicate key 'training'"):
        load_datalist(path, check_files=False)


# --------------------------------------------------------------------------------------------------------------------
# structural validation


def test_valid_datalist_passes() -> None:
    validate_datalist(_multilabel(), check_files=False)


def test_section_not_a_list() -> None:
    raw = _multilabel()
    raw["validation"] = {"image": "x.png"}
    err = _raises(raw, "section 'validation'", "must be a list")
    assert err.section == "validation" and err.index is None


def test_item_not_a_dict_or_without_image() -> None:
    raw = _multilabel()
    raw["training"].append("img/x.png")
    _raises(raw, "section 'training', item 2", "must be an object")
    raw = _multilabel()
    raw["test"].append({"path": "img/x.png"})
    _raises(raw, "section 'test', item 1, key 'image'", "missing")
    raw = _multilabel()
    raw["test"][0]["image"] = 7
    _raises(raw, "key 'image'", "path string")
    raw = _multilabel()
    raw["test"][0]["image"] = []
    _raises(raw, "key 'image'", "empty")


def test_misspelled_section_is_not_silently_ignored() -> None:
    raw = _multilabel()
    raw["unlabelled"] = raw.pop("unlabeled")
    _raises(raw, "key 'unlabelled'", "did you mean 'unlabeled'")
    raw = _multilabel()
    raw["extra_images"] = [{"image": "img/x.png"}]
    _raises(raw, "unknown section 'extra_images'")


def test_unlabeled_items_with_label_keys() -> None:
    for key in LABEL_KEYS:
        raw = _multilabel()
        raw["unlabeled"].append({"image": "img/z.png", key: "masks/z.png" if key != "label" else [0, 1, 0]})
        err = _raises(raw, "section 'unlabeled', item 1", f"key '{key}'")
        assert (err.section, err.index, err.key) == ("unlabeled", 1, key)


def test_training_items_need_a_label() -> None:
    raw = _multilabel()
    raw["training"].append({"image": "img/z.png"})
    _raises(raw, "section 'training', item 2", "unlabeled")


def test_require_training() -> None:
    raw = _multilabel()
    raw["training"] = []
    validate_datalist(raw, check_files=False)
    _raises(raw, "section 'training'", "empty", require_training=True)
    del raw["training"]
    _raises(raw, "section 'training'", require_training=True)


def test_unknown_task_and_bad_classes() -> None:
    raw = _multilabel()
    raw["task"] = "detection"
    _raises(raw, "key 'task'", "detection")
    raw = _multilabel()
    raw["classes"] = ["a", "a", "b"]
    _raises(raw, "key 'classes'", "duplicate")
    raw = _multilabel()
    raw["classes"] = "nodule,mass"
    _raises(raw, "key 'classes'")


# --------------------------------------------------------------------------------------------------------------------
# label validation


def test_label_length_against_classes() -> None:
    raw = _multilabel()
    raw["validation"][0]["label"] = [0, 0]
    err = _raises(raw, "section 'validation', item 0, key 'label'", "length 2", "shape mismatch")
    assert err.key == "label"


def test_label_length_inconsistent_without_classes() -> None:
    raw = _multilabel()
    del raw["classes"]
    validate_datalist(raw, check_files=False)
    raw["training"][1]["label"] = [0, 1]
    _raises(raw, "section 'training', item 1", "length 2", "section 'training' item 0", "3")


def test_non_binary_values() -> None:
    for bad in (2, 0.5, -2, "yes", True, None):
        raw = _multilabel()
        raw["training"][0]["label"] = [1, bad, 0]
        _raises(raw, "section 'training', item 0, key 'label'")
    raw = _multilabel()
    raw["training"][0]["label"] = [1.0, 0.0, -1.0]  # integral floats, e.g. from pandas exports
    validate_datalist(raw, check_files=False)


def test_unknown_label_only_for_multilabel() -> None:
    raw = _multilabel()
    raw["task"] = "multiclass"
    raw["training"][1]["label"] = [0, 1, -1]
    raw["training"][0]["label"] = [1, 0, 0]
    raw["validation"][0]["label"] = [0, 0, 1]
    _raises(raw, "section 'training', item 1", "-1")


def test_multiclass_must_be_one_hot() -> None:
    raw = {
        "task": "multiclass",
        "classes": ["a", "b", "c"],
        "training": [{"image": "x", "label": [0, 1, 0]}, {"image": "y", "label": [1, 1, 0]}],
    }
    _raises(raw, "section 'training', item 1, key 'label'", "one-hot")
    raw["training"][1]["label"] = [0, 0, 0]
    _raises(raw, "one-hot")


def test_label_kind_must_match_task_and_each_other() -> None:
    raw = {"task": "segmentation", "training": [{"image": "x", "label": [0, 1]}]}
    _raises(raw, "key 'label'", "segmentation")
    raw = {"task": "multilabel", "training": [{"image": "x", "label": "m.png"}]}
    _raises(raw, "key 'label'", "multilabel")
    raw = {"training": [{"image": "x", "label": "m.png"}, {"image": "y", "label": [0, 1]}]}
    _raises(raw, "section 'training', item 1", "one kind")
    raw = {"training": [{"image": "x", "label": 3}]}
    _raises(raw, "key 'label'", "int")


def test_class_name_labels_converted(dataset: Path) -> None:
    raw = _multilabel()
    raw["training"][0]["label"] = ["effusion", "nodule"]
    raw["validation"][0]["label"] = []
    validate_datalist(raw, check_files=False)
    dl = load_datalist(raw, dataset_dir=dataset)
    assert dl["training"][0]["label"] == [1, 0, 1]
    assert dl["validation"][0]["label"] == [0, 0, 0]


def test_class_name_labels_errors() -> None:
    raw = _multilabel()
    raw["training"][0]["label"] = ["nodule", "pneumothorax"]
    _raises(raw, "section 'training', item 0, key 'label'", "pneumothorax")
    raw = _multilabel()
    del raw["classes"]
    raw["training"][0]["label"] = ["nodule"]
    _raises(raw, "section 'training', item 0, key 'label'", "classes")
    raw = _multilabel()
    raw["training"][0]["label"] = ["nodule", 1]
    _raises(raw, "mixes")
    raw = _multilabel()
    raw["task"] = "multiclass"
    raw["training"] = [{"image": "x", "label": ["nodule", "mass"]}]
    raw["validation"] = []
    _raises(raw, "one-hot")


def test_label_to_vector_and_strip_labels() -> None:
    assert label_to_vector([0, 1, -1]) == [0, 1, -1]
    assert label_to_vector(["mass"], CLASSES) == [0, 1, 0]
    assert label_to_vector("mask.png") is None
    with pytest.raises(ValueError, match="unknown class"):
        label_to_vector(["x"], CLASSES)
    item = {"image": "a", "label": [1], "mask": "m", "seg": "s", "label_names": ["x"], "id": 3, "patient": "p"}
    assert strip_labels(item) == {"image": "a", "id": 3, "patient": "p"}


# --------------------------------------------------------------------------------------------------------------------
# saving and relativize


def test_save_is_deterministic_and_atomic(tmp_path: Path) -> None:
    raw = _multilabel()
    raw["name"] = "tøy"  # non-ASCII stays readable
    a = save_datalist(raw, tmp_path / "out" / "a.json")
    b = save_datalist(_multilabel() | {"name": "tøy"}, tmp_path / "b.json")
    data = a.read_bytes()
    assert data == b.read_bytes()
    assert data.endswith(b"}\n") and b'\n    "name": "t\xc3\xb8y"' in data
    assert json.loads(data) == raw
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json"], "no temporary file left behind"
    save_datalist(raw, a)  # overwrite in place
    assert a.read_bytes() == data


def test_save_converts_numpy_and_paths(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    raw = {"seed": np.int64(3), "training": [{"image": Path("a.png"), "label": np.array([0, 1])}]}
    out = json.loads(save_datalist(raw, tmp_path / "np.json").read_text())
    assert out == {"seed": 3, "training": [{"image": "a.png", "label": [0, 1]}]}


def test_save_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    target = save_datalist({"training": []}, tmp_path / "t.json")
    before = target.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        save_datalist({"training": [{"image": object()}]}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_relativize_round_trip(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "x.png"
    outside.write_bytes(b"x")
    raw = _multilabel()
    raw["test"].append({"image": str(outside)})
    dl = load_datalist(raw, dataset_dir=dataset)
    rel = relativize(dl, dataset)
    assert rel["training"][0]["image"] == "img/a.png"
    assert rel["training"][1]["mask"] == "masks/b.png"
    assert rel["test"][1]["image"] == str(outside)
    path = save_datalist(rel, dataset / "portable.json")
    assert load_datalist(path) == dl


# --------------------------------------------------------------------------------------------------------------------
# task inference


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        ([{"image": "a", "label": "m.png"}], "segmentation"),
        ([{"image": "a", "seg": "m.png"}], "segmentation"),
        ([{"image": "a", "label": [0, 1]}, {"image": "b", "label": [1, 0]}], "multiclass"),
        ([{"image": "a", "label": [0, 1]}, {"image": "b", "label": [1, 1]}], "multilabel"),
        ([{"image": "a", "label": [0, 1]}, {"image": "b", "label": [0, 0]}], "multilabel"),
        ([{"image": "a", "label": [0, 1]}, {"image": "b", "label": [1, -1]}], "multilabel"),
        ([{"image": "a", "label": ["mass"]}], "multiclass"),
        ([{"image": "a", "label": ["mass", "nodule"]}], "multilabel"),
    ],
)
def test_infer_task(training: list[dict[str, Any]], expected: str) -> None:
    assert infer_task({"classes": CLASSES, "training": training}) == expected
    assert infer_task({"task": "segmentation", "training": training}) == "segmentation"


def test_infer_task_errors() -> None:
    with pytest.raises(DatalistError, match="cannot infer"):
        infer_task({"unlabeled": [{"image": "a"}]})
    with pytest.raises(DatalistError, match="unknown task"):
        infer_task({"task": "regression"})
