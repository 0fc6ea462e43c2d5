"""Leakage between sections: `s4mi data check` reports it, bundles' data refuses it unless allowed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4mi.cli import main
from s4mi.data.check import LeakageError, check_data, find_leakage


def _png(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    return str(path)


def _datalist(tmp_path: Path) -> dict:
    img = [_png(tmp_path / f"{i}.png", i) for i in range(6)]
    return {
        "training": [{"image": img[0], "label": [1, 0]}, {"image": img[1], "label": [0, 1]}],
        "unlabeled": [{"image": img[2]}],
        "validation": [{"image": img[3], "label": [1, 0]}],
        "test": [{"image": img[4], "label": [0, 1]}, {"image": img[5], "label": [1, 0]}],
    }


def test_clean_datalist_has_no_leakage(tmp_path: Path) -> None:
    data = _datalist(tmp_path)
    assert find_leakage(data) == []
    assert check_data(data, in_channels=1, spatial_dims=2, num_classes=2) is data


def test_same_path_in_two_sections(tmp_path: Path) -> None:
    data = _datalist(tmp_path)
    data["unlabeled"].append({"image": data["test"][1]["image"]})
    assert find_leakage(data) == [f"test item 1 and unlabeled item 1 are the same image {data['test'][1]['image']}"]
    with pytest.raises(LeakageError, match="validation or test images are in the training pool: test item 1"):
        check_data(data, read_images=False)
    check_data(data, allow_leakage=True, read_images=False)


def test_same_content_under_another_path(tmp_path: Path) -> None:
    data = _datalist(tmp_path)
    copy = tmp_path / "copy_of_validation.png"
    shutil.copy(data["validation"][0]["image"], copy)
    data["training"].append({"image": str(copy), "label": [1, 0]})
    leaks = find_leakage(data)
    assert leaks == [
        f"validation item 0 ({data['validation'][0]['image']}) has the same content as training item 2 ({copy})"
    ]
    assert find_leakage(data, by_content=False) == []
    with pytest.raises(LeakageError, match="same content"):
        check_data(data, read_images=False)


def test_patient_ids_shared_across_sections(tmp_path: Path) -> None:
    data = _datalist(tmp_path)
    data["training"][0]["patient"] = "00001"
    data["unlabeled"][0]["patient"] = "00001"  # training and unlabelled are one pool: not a leak
    assert find_leakage(data) == []
    data["test"][0]["patient"] = "00001"
    assert find_leakage(data) == ["patient 00001 has images in training pool (training item 0) and test (test item 0)"]
    with pytest.raises(LeakageError, match="patient 00001"):
        check_data(data, read_images=False)


def test_training_and_unlabelled_sharing_an_image_is_reported(tmp_path: Path) -> None:
    data = _datalist(tmp_path)
    data["unlabeled"].append({"image": data["training"][0]["image"]})
    assert find_leakage(data) == [
        f"unlabeled item 1 and training item 0 are the same image {data['training'][0]['image']}"
    ]


def test_cli_data_check_lists_leakage_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _datalist(tmp_path)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(data))
    main(["data", "check", str(path)])
    assert "no item shared between sections" in capsys.readouterr().out
    data["unlabeled"].append({"image": data["validation"][0]["image"]})
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="1 item\\(s\\) shared between sections"):
        main(["data", "check", str(path)])
    assert "leakage: validation item 0 and unlabeled item 1 are the same image" in capsys.readouterr().out
