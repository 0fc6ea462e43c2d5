"""A user's own data through a bundle's own transforms: masks kept as class indices or refused by name, any 2D size.

Fast: the bundle configs are parsed with ``monai.bundle.ConfigParser`` and only their transforms run, on tiny
hand-made files (no training).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from tests.conftest import BUNDLES

POLYP = ["supervised_polyp_segmentation", "mean_teacher_polyp_segmentation", "online_pseudolabel_polyp_segmentation"]
CT = ["mean_teacher_ct_segmentation", "online_pseudolabel_ct_segmentation"]


def _parser(name: str, **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / name / "configs" / "train.json"))
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _png_pair(folder: Path, mask: np.ndarray) -> dict[str, str]:
    """An RGB frame and its mask, saved as the user's PNG files; the mask is 8-bit grey (mode L)."""
    rng = np.random.default_rng(0)
    image = folder / "frame.png"
    label = folder / "frame_mask.png"
    Image.fromarray(rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)).save(image)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(label)
    return {"image": str(image), "label": str(label)}


def _four_class_mask() -> np.ndarray:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:16, 16:], mask[16:, :16], mask[16:, 16:] = 1, 2, 3  # four 16 x 16 quadrants
    return mask


@pytest.mark.parametrize("name", POLYP)
def test_four_class_mask_survives_the_polyp_bundles_train_transforms(name: str, tmp_path: Path) -> None:
    """With ``num_classes`` 4 a {0, 1, 2, 3} mask stays {0, 1, 2, 3} (it was binarised to all background)."""
    item = _png_pair(tmp_path, _four_class_mask())
    preprocessing = _parser(name, num_classes=4, spatial_size=[16, 16]).get_parsed_content("train#preprocessing")
    for _ in range(4):
        out = preprocessing(dict(item))
        label = np.asarray(out["label"])
        assert label.shape == (1, 16, 16)
        assert sorted(np.unique(label).tolist()) == [0, 1, 2, 3], f"{name}: the 4-class mask lost its classes"
        assert [int((label == c).sum()) for c in range(4)] == [64] * 4


@pytest.mark.parametrize("name", POLYP)
def test_zero_255_mask_is_binary_by_default(name: str, tmp_path: Path) -> None:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    parser = _parser(name, spatial_size=[32, 32])
    out = parser.get_parsed_content("validate#preprocessing")(_png_pair(tmp_path, mask))
    np.testing.assert_array_equal(np.asarray(out["label"])[0], mask > 0)


@pytest.mark.parametrize("name", POLYP)
def test_mask_with_values_beyond_num_classes_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    item = _png_pair(tmp_path, _four_class_mask())
    preprocessing = _parser(name, num_classes=3, spatial_size=[16, 16]).get_parsed_content("train#preprocessing")
    with pytest.raises(Exception) as info:  # MONAI's Compose wraps the transform's ValueError
        preprocessing(dict(item))
    text = str(info.value) + str(info.value.__cause__)
    assert f"{item['label']}: mask 'label' has values {{0, 1, 2, 3}}, which do not fit num_classes 3" in text


@pytest.mark.parametrize("name", POLYP)
def test_polyp_inference_writes_class_indices_when_multi_class(name: str) -> None:
    """MONAI's SaveImaged(scale=255) clips to [0, 1]: classes 2 and 3 would be written as 255 like class 1."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / name / "configs" / "inference.json"))
    saves = [i for i, t in enumerate(parser["postprocessing"]["transforms"]) if t["_target_"] == "SaveImaged"]
    assert len(saves) == 1
    assert parser.get_parsed_content(f"postprocessing#transforms#{saves[0]}#scale") == (
        255 if parser.get_parsed_content("num_classes") <= 2 else None
    )
    parser["num_classes"] = 4
    assert parser.get_parsed_content(f"postprocessing#transforms#{saves[0]}#scale") is None


def _nifti_pair(folder: Path, label: np.ndarray) -> dict[str, str]:
    affine = np.eye(4)
    image = folder / "ct.nii.gz"
    seg = folder / "ct_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(label.shape, dtype=np.float32), affine), image)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), seg)
    return {"image": str(image), "label": str(seg)}


@pytest.mark.parametrize("name", CT)
def test_ct_label_beyond_num_classes_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[4:12, 4:12, 4:12] = 6  # a class the bundle's 5 outputs do not have
    item = _nifti_pair(tmp_path, label)
    preprocessing = _parser(name, spatial_size=[8, 8, 8]).get_parsed_content("validate#preprocessing")
    with pytest.raises(Exception) as info:
        preprocessing(dict(item))
    text = str(info.value) + str(info.value.__cause__)
    assert f"{item['label']}: mask 'label' has values {{0, 6}}, which do not fit num_classes 5" in text
    label[label == 6] = 4
    out = preprocessing(_nifti_pair(tmp_path, label))
    assert sorted(np.unique(np.asarray(out["label"])).tolist()) == [0, 4]


def _collate_all(transform, item: dict, n: int) -> dict:
    from monai.data import list_data_collate

    outs = []
    for _ in range(n):
        out = transform(dict(item))
        outs += out if isinstance(out, list) else [out]
    return list_data_collate(outs)  # "stack expects each tensor to be equal size" when a rotation swapped axes


@pytest.mark.parametrize("name", POLYP)
def test_non_square_spatial_size_gives_equal_size_tensors(name: str, tmp_path: Path) -> None:
    """RandRotate90d swapped the axes of a 208 x 240 frame in half the draws, and the batch failed to collate."""
    mask = np.zeros((40, 44), dtype=np.uint8)
    mask[10:30, 12:30] = 255
    item = _png_pair(tmp_path, mask)
    size = [20, 24]
    parser = _parser(name, spatial_size=size)
    transforms = [parser.get_parsed_content("train#preprocessing")]
    if "unlabeled_preprocessing" in parser["train"]:
        transforms.append(parser.get_parsed_content("train#unlabeled_preprocessing"))
    for transform in transforms:
        transform.set_random_state(seed=0)
        batch = _collate_all(transform, item, 24)
        for key, value in batch.items():
            if hasattr(value, "shape") and value.ndim == 4:
                assert tuple(value.shape[2:]) == tuple(size), f"{name}: {key} has shape {tuple(value.shape)}"


@pytest.mark.parametrize("name", POLYP)
def test_square_spatial_size_keeps_the_90_degree_rotations(name: str) -> None:
    parser = _parser(name)
    assert parser.get_parsed_content("spatial_size")[0] == parser.get_parsed_content("spatial_size")[1]
    rotations = [t for t in parser.get_parsed_content("train#augmentation") if type(t).__name__ == "RandRotate90d"]
    assert len(rotations) == 1 and rotations[0].prob == 0.5
