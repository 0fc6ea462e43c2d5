"""Tests for s4mi.data.adapters on tiny fixtures laid out exactly like the public releases."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from s4mi.data.adapters import (
    ADAPTERS,
    CHESTXRAY14_CLASSES,
    CHEXPERT_CLASSES,
    ISIC2018_CLASSES,
    AdapterError,
    adapt,
    chestxray14,
    chexpert,
    isic2018_task3,
    kvasir_seg,
    msd,
    pranet,
)

SECTIONS = ("training", "unlabeled", "validation", "test")


def _image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _assert_well_formed(datalist: dict[str, Any], root: Path) -> None:
    assert list(datalist)[:5] == ["name", "description", "task", "modality", "classes"]
    for section in SECTIONS:
        assert isinstance(datalist[section], list)
        for item in datalist[section]:
            for key in ("image", "label"):
                value = item.get(key)
                if isinstance(value, str):
                    assert not value.startswith(("/", "./")) and "\\" not in value
                    assert (root / value).is_file(), value
            if datalist["task"] != "segmentation" and "label" in item:
                assert len(item["label"]) == len(datalist["classes"])
                assert all(isinstance(v, int) for v in item["label"])
    assert datalist["unlabeled"] == []


def _onehot(names: tuple[str, ...], *positives: str) -> list[int]:
    return [int(name in positives) for name in names]


# ---------------------------------------------------------------------------------------------------------------------
# NIH ChestX-ray14

CXR14_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
CXR14_ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000001_002.png,Cardiomegaly|Effusion,2,1,58,M,PA,2500,2048,0.168,0.168",
    "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171",
    "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143",
    "00000003_001.png,Hernia|Infiltration|Pleural_Thickening,1,3,74,F,PA,2500,2048,0.168,0.168",
    "00000004_000.png,Mass|Nodule,0,4,82,M,AP,2500,2048,0.168,0.168",
]
CXR14_TRAIN = ["00000001_000.png", "00000001_001.png", "00000001_002.png", "00000002_000.png", "00000004_000.png"]
CXR14_TEST = ["00000003_000.png", "00000003_001.png"]


def _make_cxr14(root: Path, kaggle: bool = False, rows: list[str] | None = None) -> Path:
    _text(root / "Data_Entry_2017.csv", "\n".join([CXR14_HEADER, *(rows or CXR14_ROWS)]) + "\n")
    _text(root / "train_val_list.txt", "\n".join(CXR14_TRAIN) + "\n")
    _text(root / "test_list.txt", "\n".join(CXR14_TEST) + "\n")
    for i, name in enumerate(CXR14_TRAIN + CXR14_TEST):
        folder = root / (f"images_{1 + i % 2:03d}/images" if kaggle else "images")
        _image(folder / name, i)
    return root


def test_chestxray14_labels_sections_and_metadata(tmp_path: Path) -> None:
    root = _make_cxr14(tmp_path / "cxr14")
    dl = chestxray14(root)
    _assert_well_formed(dl, root)
    assert dl["task"] == "multilabel"
    assert dl["classes"] == list(CHESTXRAY14_CLASSES)
    assert dl["classes"][0] == "Atelectasis" and dl["classes"][-1] == "Hernia"
    assert [item["id"] for item in dl["training"]] == CXR14_TRAIN
    assert [item["id"] for item in dl["test"]] == CXR14_TEST
    assert dl["validation"] == []
    first, second = dl["training"][0], dl["training"][1]
    assert first["image"] == "images/00000001_000.png"
    assert first["label"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert second["label"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert second["patient"] == 1 and second["follow_up"] == 1 and second["view"] == "PA"
    assert dl["training"][3]["label"] == [0] * 14
    assert dl["training"][4]["label"] == _onehot(CHESTXRAY14_CLASSES, "Mass", "Nodule")
    assert dl["training"][4]["view"] == "AP"
    assert dl["test"][1]["label"] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def test_chestxray14_kaggle_layout(tmp_path: Path) -> None:
    root = _make_cxr14(tmp_path / "data", kaggle=True)
    dl = chestxray14(root)
    _assert_well_formed(dl, root)
    assert dl["training"][0]["image"] == "images_001/images/00000001_000.png"
    assert dl["training"][1]["image"] == "images_002/images/00000001_001.png"
    assert dl["test"][1]["image"] == "images_001/images/00000003_001.png"


def test_chestxray14_unknown_finding_names_row(tmp_path: Path) -> None:
    rows = [*CXR14_ROWS]
    rows[2] = "00000001_002.png,Cardiomegaly|Pleural Thickening,2,1,58,M,PA,2500,2048,0.168,0.168"
    root = _make_cxr14(tmp_path / "cxr14", rows=rows)
    with pytest.raises(AdapterError, match=r"line 4 \(00000001_002\.png\).*'Pleural Thickening'"):
        chestxray14(root)


def test_chestxray14_missing_csv_and_lists(tmp_path: Path) -> None:
    root = _make_cxr14(tmp_path / "cxr14")
    (root / "test_list.txt").unlink()
    with pytest.raises(AdapterError, match="test_list.txt"):
        chestxray14(root)
    (root / "Data_Entry_2017.csv").unlink()
    with pytest.raises(AdapterError, match="Data_Entry_2017.csv"):
        chestxray14(root)


def test_chestxray14_listed_image_without_row(tmp_path: Path) -> None:
    root = _make_cxr14(tmp_path / "cxr14", rows=CXR14_ROWS[:-1])
    with pytest.raises(AdapterError, match=r"train_val_list\.txt.*00000004_000\.png"):
        chestxray14(root)


def test_chestxray14_missing_image(tmp_path: Path) -> None:
    root = _make_cxr14(tmp_path / "cxr14")
    (root / "images" / "00000002_000.png").unlink()
    (root / "images" / "00000003_001.png").unlink()
    with pytest.raises(AdapterError, match=r"^2 file\(s\).*00000002_000\.png"):
        chestxray14(root)
    dl = chestxray14(root, check_files=False)
    assert dl["training"][3]["image"] == "images/00000002_000.png"


# ---------------------------------------------------------------------------------------------------------------------
# CheXpert

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,"
    "Support Devices"
)
CHEXPERT_TRAIN = [
    "{p}train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "{p}train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
    "{p}train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,",
    "{p}train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,",
    "{p}train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,",
]
CHEXPERT_VALID = [
    "{p}valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,0.0",
    "{p}valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
    "0.0,0.0,0.0,1.0",
]
# patient00002/study2: Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion uncertain;
# Lung Opacity, Fracture positive; the rest blank.
CHEXPERT_UNCERTAIN_ROW = {
    "ones": [0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0],
    "zeros": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    "ignore": [0, 0, -1, 1, 0, -1, -1, 0, -1, 0, -1, 0, 1, 0],
}


def _make_chexpert(parent: Path, folder: str = "CheXpert-v1.0-small", prefix: str | None = None) -> Path:
    root = parent / folder
    p = "CheXpert-v1.0-small/" if prefix is None else prefix
    for name, rows in (("train.csv", CHEXPERT_TRAIN), ("valid.csv", CHEXPERT_VALID)):
        lines = [row.format(p=p) for row in rows]
        _text(root / name, "\n".join([CHEXPERT_HEADER, *lines]) + "\n")
        for line in lines:
            rel = line.split(",")[0]
            rel = rel[len(p) :] if rel.startswith(p) else rel
            _image(root / rel)
    return root


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_chexpert_policies(tmp_path: Path, policy: str) -> None:
    root = _make_chexpert(tmp_path)
    dl = chexpert(root, policy=policy)
    _assert_well_formed(dl, root)
    assert dl["task"] == "multilabel" and dl["classes"] == list(CHEXPERT_CLASSES)
    assert len(dl["training"]) == 5 and len(dl["validation"]) == 2 and dl["test"] == []
    assert dl["training"][1]["label"] == CHEXPERT_UNCERTAIN_ROW[policy]
    assert dl["training"][0]["label"] == _onehot(CHEXPERT_CLASSES, "No Finding", "Support Devices")
    expected_row3 = _onehot(CHEXPERT_CLASSES, "Lung Opacity", "Fracture")
    expected_row3[CHEXPERT_CLASSES.index("Consolidation")] = {"ones": 1, "zeros": 0, "ignore": -1}[policy]
    assert dl["training"][2]["label"] == expected_row3
    assert dl["validation"][0]["label"] == _onehot(
        CHEXPERT_CLASSES, "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity"
    )
    values = {v for item in dl["training"] for v in item["label"]}
    assert (-1 in values) == (policy == "ignore")


def test_chexpert_paths_and_metadata(tmp_path: Path) -> None:
    root = _make_chexpert(tmp_path)
    dl = chexpert(root)
    item = dl["training"][1]
    assert item["image"] == "train/patient00002/study2/view1_frontal.jpg"
    assert item["id"] == "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"
    assert item["patient"] == "patient00002" and item["study"] == "study2"
    assert item["sex"] == "Female" and item["age"] == 87 and item["view"] == "Frontal" and item["projection"] == "AP"
    assert "projection" not in dl["training"][3]
    assert dl["validation"][0]["image"] == "valid/patient64541/study1/view1_frontal.jpg"


def test_chexpert_renamed_root_and_unprefixed_paths(tmp_path: Path) -> None:
    renamed = _make_chexpert(tmp_path / "a", folder="chexpert_small")
    dl = chexpert(renamed)
    _assert_well_formed(dl, renamed)
    assert dl["training"][0]["image"] == "train/patient00001/study1/view1_frontal.jpg"
    unprefixed = _make_chexpert(tmp_path / "b", prefix="")
    dl = chexpert(unprefixed)
    _assert_well_formed(dl, unprefixed)
    assert dl["training"][0]["image"] == "train/patient00001/study1/view1_frontal.jpg"


def test_chexpert_frontal_only(tmp_path: Path) -> None:
    root = _make_chexpert(tmp_path)
    dl = chexpert(root, frontal_only=True)
    assert len(dl["training"]) == 4 and len(dl["validation"]) == 1
    assert all(item["view"] == "Frontal" for section in ("training", "validation") for item in dl[section])


def test_chexpert_errors(tmp_path: Path) -> None:
    root = _make_chexpert(tmp_path)
    with pytest.raises(ValueError, match="policy 'mixed'"):
        chexpert(root, policy="mixed")
    _image(root / "train/patient00003/study1/view1_frontal.jpg").unlink()
    with pytest.raises(AdapterError, match=r"1 file\(s\).*patient00003"):
        chexpert(root)
    assert len(chexpert(root, check_files=False)["training"]) == 5
    text = (root / "train.csv").read_text().replace("Female,87,Frontal,AP,,,-1.0", "Female,87,Frontal,AP,,,2.0")
    (root / "train.csv").write_text(text)
    with pytest.raises(AdapterError, match=r"line 3 .*'Cardiomegaly' has value '2.0'"):
        chexpert(root, check_files=False)
    (root / "valid.csv").unlink()
    (root / "train.csv").write_text(CHEXPERT_HEADER.replace(",Edema", "") + "\n")
    with pytest.raises(AdapterError, match="Edema"):
        chexpert(root)
    (root / "train.csv").write_text(CHEXPERT_HEADER + "\n")
    with pytest.raises(AdapterError, match="valid.csv"):
        chexpert(root)


# ---------------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 3

ISIC_HEADER = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
ISIC_TRAIN = {
    "ISIC_0024310": "1.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0024306": "0.0,1.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0024331": "0.0,0.0,0.0,0.0,0.0,0.0,1.0",
    "ISIC_0024308": "0.0,0.0,0.0,0.0,1.0,0.0,0.0",
    "ISIC_0024307": "0.0,1.0,0.0,0.0,0.0,0.0,0.0",
}
ISIC_VALID = {"ISIC_0034524": "0.0,1.0,0.0,0.0,0.0,0.0,0.0", "ISIC_0034321": "0.0,0.0,0.0,1.0,0.0,0.0,0.0"}


def _make_isic_split(root: Path, split: str, rows: dict[str, str], images: bool = True, truth: bool = True) -> None:
    if images:
        input_dir = root / f"ISIC2018_Task3_{split}_Input"
        _text(input_dir / "LICENSE.txt", "CC-BY-NC\n")
        _text(input_dir / "ATTRIBUTION.txt", "HAM10000\n")
        for i, image_id in enumerate(rows):
            _image(input_dir / f"{image_id}.jpg", i)
    if truth:
        lines = [ISIC_HEADER, *(f"{image_id},{values}" for image_id, values in rows.items())]
        truth_dir = root / f"ISIC2018_Task3_{split}_GroundTruth"
        _text(truth_dir / f"ISIC2018_Task3_{split}_GroundTruth.csv", "\n".join(lines) + "\n")


def test_isic2018_training_only(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    _make_isic_split(root, "Training", ISIC_TRAIN)
    dl = isic2018_task3(root)
    _assert_well_formed(dl, root)
    assert dl["task"] == "multiclass" and dl["classes"] == list(ISIC2018_CLASSES)
    assert [item["id"] for item in dl["training"]] == sorted(ISIC_TRAIN)
    by_id = {item["id"]: item for item in dl["training"]}
    assert by_id["ISIC_0024306"]["image"] == "ISIC2018_Task3_Training_Input/ISIC_0024306.jpg"
    assert by_id["ISIC_0024306"]["label"] == [0, 1, 0, 0, 0, 0, 0]
    assert by_id["ISIC_0024310"]["label"] == [1, 0, 0, 0, 0, 0, 0]
    assert by_id["ISIC_0024308"]["label"] == _onehot(ISIC2018_CLASSES, "BKL")
    assert by_id["ISIC_0024331"]["label"] == _onehot(ISIC2018_CLASSES, "VASC")
    assert dl["validation"] == [] and dl["test"] == []


def test_isic2018_validation_and_test_splits(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    _make_isic_split(root, "Training", ISIC_TRAIN)
    _make_isic_split(root, "Validation", ISIC_VALID)
    _make_isic_split(root, "Test", {"ISIC_0034525": "0.0,0.0,1.0,0.0,0.0,0.0,0.0"})
    dl = isic2018_task3(root)
    _assert_well_formed(dl, root)
    assert [item["id"] for item in dl["validation"]] == ["ISIC_0034321", "ISIC_0034524"]
    assert dl["validation"][0]["label"] == _onehot(ISIC2018_CLASSES, "AKIEC")
    assert dl["test"] == [
        {"image": "ISIC2018_Task3_Test_Input/ISIC_0034525.jpg", "label": [0, 0, 1, 0, 0, 0, 0], "id": "ISIC_0034525"}
    ]


def test_isic2018_half_split_is_skipped_with_warning(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    _make_isic_split(root, "Training", ISIC_TRAIN)
    _make_isic_split(root, "Test", {"ISIC_0034525": "0.0,0.0,1.0,0.0,0.0,0.0,0.0"}, truth=False)
    with pytest.warns(UserWarning, match="Test"):
        dl = isic2018_task3(root)
    assert dl["test"] == []


@pytest.mark.parametrize(
    "values",
    ["0.0,1.0,0.0,0.0,1.0,0.0,0.0", "0.0,0.0,0.0,0.0,0.0,0.0,0.0", "0.0,0.5,0.5,0.0,0.0,0.0,0.0", "0,x,0,0,0,0,0"],
)
def test_isic2018_non_one_hot_row(tmp_path: Path, values: str) -> None:
    root = tmp_path / "isic"
    _make_isic_split(root, "Training", {**ISIC_TRAIN, "ISIC_0024331": values})
    with pytest.raises(AdapterError, match=r"line 4 \(ISIC_0024331\).*not one-hot"):
        isic2018_task3(root)


def test_isic2018_missing_csv_and_image(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    _make_isic_split(root, "Training", ISIC_TRAIN, truth=False)
    with pytest.raises(AdapterError, match="ISIC2018_Task3_Training_GroundTruth.csv"):
        isic2018_task3(root)
    _make_isic_split(root, "Training", ISIC_TRAIN)
    (root / "ISIC2018_Task3_Training_Input" / "ISIC_0024308.jpg").unlink()
    with pytest.raises(AdapterError, match=r"1 file\(s\).*ISIC_0024308\.jpg"):
        isic2018_task3(root)


# ---------------------------------------------------------------------------------------------------------------------
# Kvasir-SEG and PraNet

KVASIR_IDS = ["cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0roawvklrq0799vmjorwfv"]


def _make_pairs(image_dir: Path, mask_dir: Path, stems: list[str], suffix: str) -> None:
    for i, stem in enumerate(stems):
        _image(image_dir / f"{stem}{suffix}", 10 * i)
        _image(mask_dir / f"{stem}{suffix}", 255)


def _make_kvasir(root: Path) -> Path:
    _make_pairs(root / "images", root / "masks", list(reversed(KVASIR_IDS)), ".jpg")
    _text(root / "kavsir_bboxes.json", "{}\n")
    return root


def test_kvasir_seg(tmp_path: Path) -> None:
    root = _make_kvasir(tmp_path / "Kvasir-SEG")
    dl = kvasir_seg(root)
    _assert_well_formed(dl, root)
    assert dl["task"] == "segmentation" and dl["classes"] == ["background", "polyp"]
    assert dl["training"] == [
        {"image": f"images/{stem}.jpg", "label": f"masks/{stem}.jpg", "id": stem} for stem in KVASIR_IDS
    ]
    assert dl["validation"] == [] and dl["test"] == []


def test_kvasir_seg_unpaired_files(tmp_path: Path) -> None:
    root = _make_kvasir(tmp_path / "Kvasir-SEG")
    _image(root / "masks" / "orphan.jpg")
    with pytest.raises(AdapterError, match=r"mask\(s\) without an image.*orphan\.jpg"):
        kvasir_seg(root)
    (root / "masks" / "orphan.jpg").unlink()
    (root / "masks" / f"{KVASIR_IDS[1]}.jpg").unlink()
    with pytest.raises(AdapterError, match=rf"image\(s\) without a mask.*{KVASIR_IDS[1]}\.jpg"):
        kvasir_seg(root)


def test_kvasir_seg_missing_folder(tmp_path: Path) -> None:
    root = tmp_path / "Kvasir-SEG"
    _make_pairs(root / "images", root / "other", KVASIR_IDS, ".jpg")
    with pytest.raises(AdapterError, match=r"Kvasir-SEG[/\\]masks"):
        kvasir_seg(root)


def _make_pranet(root: Path, train_dirs: tuple[str, str] = ("image", "mask")) -> Path:
    _make_pairs(root / "TrainDataset" / train_dirs[0], root / "TrainDataset" / train_dirs[1], ["2", "10", "1"], ".png")
    for set_name, stems in (("CVC-300", ["150", "151"]), ("Kvasir", KVASIR_IDS[:2]), ("ETIS-LaribPolypDB", ["1"])):
        set_dir = root / "TestDataset" / set_name
        _make_pairs(set_dir / "images", set_dir / "masks", stems, ".png")
    return root


def test_pranet(tmp_path: Path) -> None:
    root = _make_pranet(tmp_path / "data")
    dl = pranet(root)
    _assert_well_formed(dl, root)
    assert dl["task"] == "segmentation" and dl["classes"] == ["background", "polyp"]
    assert [item["image"] for item in dl["training"]] == [
        "TrainDataset/image/1.png",
        "TrainDataset/image/10.png",
        "TrainDataset/image/2.png",
    ]
    assert dl["training"][0]["label"] == "TrainDataset/mask/1.png"
    assert all("source" not in item for item in dl["training"])
    assert [(item["source"], item["id"]) for item in dl["test"]] == [
        ("Kvasir", KVASIR_IDS[0]),
        ("Kvasir", KVASIR_IDS[1]),
        ("ETIS-LaribPolypDB", "1"),
        ("CVC-300", "150"),
        ("CVC-300", "151"),
    ]
    assert dl["test"][2] == {
        "image": "TestDataset/ETIS-LaribPolypDB/images/1.png",
        "label": "TestDataset/ETIS-LaribPolypDB/masks/1.png",
        "id": "1",
        "source": "ETIS-LaribPolypDB",
    }


def test_pranet_plural_train_folders_and_no_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _make_pairs(root / "TrainDataset" / "images", root / "TrainDataset" / "masks", ["1", "2"], ".png")
    dl = pranet(root)
    _assert_well_formed(dl, root)
    assert [item["label"] for item in dl["training"]] == ["TrainDataset/masks/1.png", "TrainDataset/masks/2.png"]
    assert dl["test"] == []


def test_pranet_errors(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="TrainDataset"):
        pranet(tmp_path)
    root = _make_pranet(tmp_path / "data")
    (root / "TestDataset" / "CVC-300" / "images" / "151.png").unlink()
    with pytest.raises(AdapterError, match=r"mask\(s\) without an image.*CVC-300.*151\.png"):
        pranet(root)


# ---------------------------------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon


def _nifti(path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.uint8), np.eye(4)), str(path))


def _make_msd(root: Path, spec_overrides: dict[str, Any] | None = None) -> Path:
    spec: dict[str, Any] = {
        "name": "Spleen",
        "description": "Spleen Segmentation",
        "reference": "Memorial Sloan Kettering Cancer Center",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 06/08/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2,
        "numTest": 1,
        "training": [
            {"image": "./imagesTr/spleen_19.nii.gz", "label": "./labelsTr/spleen_19.nii.gz"},
            {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
        ],
        "test": ["./imagesTs/spleen_1.nii.gz"],
    }
    spec.update(spec_overrides or {})
    _text(root / "dataset.json", json.dumps(spec, indent=4))
    for name in ("imagesTr/spleen_19", "imagesTr/spleen_2", "labelsTr/spleen_19", "labelsTr/spleen_2"):
        _nifti(root / f"{name}.nii.gz")
    _nifti(root / "imagesTs/spleen_1.nii.gz")
    return root


def test_msd(tmp_path: Path) -> None:
    root = _make_msd(tmp_path / "Task09_Spleen")
    dl = msd(root)
    _assert_well_formed(dl, root)
    assert dl["name"] == "Spleen" and dl["description"] == "Spleen Segmentation"
    assert dl["task"] == "segmentation" and dl["modality"] == "CT" and dl["classes"] == ["background", "spleen"]
    assert dl["training"] == [
        {"image": "imagesTr/spleen_19.nii.gz", "label": "labelsTr/spleen_19.nii.gz", "id": "spleen_19"},
        {"image": "imagesTr/spleen_2.nii.gz", "label": "labelsTr/spleen_2.nii.gz", "id": "spleen_2"},
    ]
    assert dl["test"] == [{"image": "imagesTs/spleen_1.nii.gz", "id": "spleen_1"}]
    assert dl["validation"] == []


def test_msd_multimodal_label_key_order(tmp_path: Path) -> None:
    overrides = {
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "2": "non-enhancing tumor", "1": "edema", "3": "enhancing tumour"},
    }
    root = _make_msd(tmp_path / "Task01_BrainTumour", overrides)
    dl = msd(root)
    assert dl["modality"] == "FLAIR+T1w+t1gd+T2w"
    assert dl["classes"] == ["background", "edema", "non-enhancing tumor", "enhancing tumour"]


def test_msd_errors(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="dataset.json"):
        msd(tmp_path)
    root = _make_msd(tmp_path / "Task09_Spleen")
    (root / "labelsTr" / "spleen_2.nii.gz").unlink()
    with pytest.raises(AdapterError, match=r"1 file\(s\).*labelsTr[/\\]spleen_2\.nii\.gz"):
        msd(root)
    assert len(msd(root, check_files=False)["training"]) == 2
    _make_msd(root, {"training": [{"image": "./imagesTr/spleen_19.nii.gz"}]})
    with pytest.raises(AdapterError, match=r"training\[0\]"):
        msd(root)
    _make_msd(root, {"labels": {"1": "spleen"}})
    with pytest.raises(AdapterError, match="'labels'"):
        msd(root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(AdapterError, match="invalid JSON"):
        msd(root)


# ---------------------------------------------------------------------------------------------------------------------
# registry and adapt()


def test_registry_names() -> None:
    assert set(ADAPTERS) == {"chestxray14", "chexpert", "isic2018", "kvasir", "pranet", "msd"}
    assert ADAPTERS["isic2018"] is isic2018_task3 and ADAPTERS["kvasir"] is kvasir_seg


def test_adapt_writes_json_atomically(tmp_path: Path) -> None:
    root = _make_chexpert(tmp_path)
    out = tmp_path / "lists" / "chexpert.json"
    dl = adapt("chexpert", root, out=out, policy="ignore")
    text = out.read_text(encoding="utf-8")
    assert text.endswith("}\n") and '\n    "name": "CheXpert"' in text
    assert json.loads(text) == dl
    assert dl["training"][1]["label"] == CHEXPERT_UNCERTAIN_ROW["ignore"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["chexpert.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapt("kvasir", _make_kvasir(tmp_path / "Kvasir-SEG")) == kvasir_seg(tmp_path / "Kvasir-SEG")


def test_adapt_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset adapter 'nih'.*chestxray14.*msd"):
        adapt("nih", tmp_path)
    out = tmp_path / "out.json"
    with pytest.raises(AdapterError):
        adapt("kvasir", tmp_path / "missing", out=out)
    assert not out.exists()
