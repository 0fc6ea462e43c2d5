"""A bundle given a datalist that `s4mi split` made trains on that split, not on a split of it (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from s4mi.data.datalist import load_datalist, save_datalist
from s4mi.data.phantoms import make_phantom
from s4mi.data.split import label_fraction_split
from tests.conftest import BUNDLES

BUNDLE = "mean_teacher_polyp_segmentation"


def _data(output_dir: Path, dataset_dir: Path, datalist: Path, **overrides: object) -> dict:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / BUNDLE / "configs" / "train.json"))
    parser["dataset_dir"] = str(dataset_dir)
    parser["datalist"] = str(datalist)
    parser["output_dir"] = str(output_dir)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content("data")


def test_a_split_datalist_keeps_its_labelled_items(tmp_path: Path) -> None:
    phantom = tmp_path / "polyp"
    source = make_phantom("polyp", phantom, n=40, image_size=32)  # 28 training items
    split = label_fraction_split(json.loads(source.read_text()), 0.1, seed=5)  # 3 labelled, 25 unlabelled
    datalist = save_datalist(split, phantom / "polyp-10pct.json")
    recorded = load_datalist(datalist)
    assert len(recorded["training"]) == 3

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / BUNDLE / "configs" / "train.json"))
    assert parser["label_fraction"] == 0.1, "the test relies on the bundle's default label fraction"

    data = _data(tmp_path / "run", phantom, datalist)
    assert data["training"] == recorded["training"], "the bundle split the split datalist again"
    assert data["unlabeled"] == recorded["unlabeled"]
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert saved["split_origin"]["label_fraction"] == 0.1
    assert _data(tmp_path / "run", phantom, datalist) == data, "a later stage reuses the run's split"

    with pytest.raises(RuntimeError) as info:  # MONAI wraps the expression's error
        _data(tmp_path / "other", phantom, datalist, label_fraction=0.2)
    assert isinstance(info.value.__cause__, ValueError)
    assert "pass --label_fraction 0.1" in str(info.value.__cause__)
