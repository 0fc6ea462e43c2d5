"""Classification labels as files (MONAI Label's datastore): written and read back to the same vector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s4mi.transforms import LoadClassLabeld, write_class_label


@pytest.mark.parametrize("vector", [[0, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0, 0], [0, 0, 1]])
def test_png_round_trip(tmp_path: Path, vector: list[int]) -> None:
    path = write_class_label(vector, tmp_path / "labels" / "a.png")
    out = LoadClassLabeld("label", num_classes=len(vector))({"label": str(path), "image": "x.png"})
    assert out["image"] == "x.png"
    np.testing.assert_array_equal(out["label"], np.asarray(vector, dtype=np.float32))


def test_json_vectors_and_missing_keys(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps({"label": [1, 0, 1]}))
    t = LoadClassLabeld("label", num_classes=3, allow_missing_keys=True)
    np.testing.assert_array_equal(t({"label": tmp_path / "l.json"})["label"], [1, 0, 1])
    assert t({"label": [0, 1, 0]})["label"] == [0, 1, 0], "vectors pass through"
    assert t({"image": "u.png"}) == {"image": "u.png"}, "unlabelled items pass through"


def test_bad_label_files_are_named(tmp_path: Path) -> None:
    path = write_class_label([1, 0], tmp_path / "short.png")
    with pytest.raises(ValueError, match="short.png holds 2 values, expected 6"):
        LoadClassLabeld("label", num_classes=6)({"label": str(path)})
    (tmp_path / "bad.json").write_text("[0, 2, 1]")
    with pytest.raises(ValueError, match="bad.json"):
        LoadClassLabeld("label", num_classes=3)({"label": str(tmp_path / "bad.json")})
    with pytest.raises(ValueError, match="0/1"):
        write_class_label([0, 3], tmp_path / "x.png")
