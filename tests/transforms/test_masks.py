from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from s4mi.transforms import BinarizeMaskd, SegmentationLabeld, png_scale


def test_rgb_jpeg_like_mask_becomes_binary_single_channel() -> None:
    m = torch.zeros(3, 4, 4)
    m[:, 1:3, 1:3] = 250.0
    m[:, 0, 0] = 20.0  # compression noise below the threshold
    out = BinarizeMaskd("label")({"label": m})["label"]
    assert out.shape == (1, 4, 4)
    assert out.sum() == 4 and set(out.unique().tolist()) == {0.0, 1.0}


def test_binary_mask_kept_and_numpy_supported() -> None:
    m = np.zeros((1, 3, 3), dtype=np.uint8)
    m[0, 1, 1] = 1
    out = BinarizeMaskd("label")({"label": m})["label"]
    assert out.dtype == np.float32 and out.sum() == 1


def test_channel_last_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="'label'.*channel-first"):
        BinarizeMaskd("label")({"label": torch.zeros(4, 4)})


def _named(mask: torch.Tensor, name: str = "/data/masks/case_07.png") -> MetaTensor:
    return MetaTensor(mask, meta={"filename_or_obj": name})


@pytest.mark.parametrize("num_classes", [1, 2])
@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_binary_masks_become_zero_one(num_classes: int, scale: float) -> None:
    m = torch.zeros(1, 4, 4)
    m[0, 1:3, 1:3] = scale
    out = SegmentationLabeld("label", num_classes=num_classes)({"label": _named(m)})["label"]
    assert out.dtype == torch.float32 and out.shape == (1, 4, 4)
    torch.testing.assert_close(out.as_tensor(), (m > 0).float())


def test_multi_class_mask_kept_as_class_indices() -> None:
    m = torch.tensor([[0.0, 1.0], [2.0, 3.0]])[None]
    out = SegmentationLabeld("label", num_classes=4)({"label": _named(m)})["label"]
    torch.testing.assert_close(out.as_tensor(), m)
    assert out.meta["filename_or_obj"] == "/data/masks/case_07.png"


def test_multi_class_mask_with_identical_channels_keeps_one() -> None:
    m = torch.tensor([[0.0, 1.0], [2.0, 2.0]])[None].repeat(3, 1, 1)  # a grey mask saved as RGB
    out = SegmentationLabeld("label", num_classes=3)({"label": m})["label"]
    torch.testing.assert_close(out, m[:1])


@pytest.mark.parametrize(
    ("values", "num_classes", "found"),
    [
        ([0.0, 1.0, 2.0, 3.0], 2, r"\{0, 1, 2, 3\}.*num_classes 2.*needs num_classes 4"),  # was all background
        ([0.0, 1.0, 2.0, 3.0], 1, r"\{0, 1, 2, 3\}.*num_classes 1"),
        ([0.0, 4.0, 1.0, 2.0], 4, r"\{0, 1, 2, 4\}.*num_classes 4.*0\.\.3"),
        ([0.0, 255.0, 0.0, 255.0], 4, r"\{0, 255\}.*num_classes 4.*0/255 masks are binary"),
        ([0.0, 1.5, 1.0, 2.0], 3, r"\{0, 1, 1\.5, 2\}.*num_classes 3"),
        ([0.0, -1.0, 1.0, 2.0], 3, r"\{-1, 0, 1, 2\}.*num_classes 3"),
    ],
)
def test_mask_that_does_not_fit_num_classes_is_refused_by_name(values: list, num_classes: int, found: str) -> None:
    m = _named(torch.tensor(values).reshape(1, 2, 2))
    with pytest.raises(ValueError, match=r"^/data/masks/case_07\.png: mask 'label' has values " + found):
        SegmentationLabeld("label", num_classes=num_classes)({"label": m})


def test_class_index_mask_is_not_binarised_to_background_by_binarize() -> None:
    with pytest.raises(ValueError, match=r"case_07\.png.*\{0, 1, 2, 3\}.*all background"):
        BinarizeMaskd("label")({"label": _named(torch.tensor([[0.0, 1.0], [2.0, 3.0]])[None])})


def test_multi_class_mask_with_differing_channels_is_refused() -> None:
    m = torch.zeros(3, 2, 2)
    m[1, 0, 0] = 2.0  # a colour-coded mask: not class indices
    with pytest.raises(ValueError, match="3 channels that differ"):
        SegmentationLabeld("label", num_classes=3)({"label": _named(m)})


def test_file_named_from_meta_dict_when_not_a_meta_tensor() -> None:
    d = {"label": np.full((1, 2, 2), 7, dtype=np.float32), "label_meta_dict": {"filename_or_obj": "a/b.nii.gz"}}
    with pytest.raises(ValueError, match=r"^a/b\.nii\.gz: mask 'label' has values \{7\}"):
        SegmentationLabeld("label", num_classes=5)(d)


def test_png_scale_only_for_binary_maps() -> None:
    assert png_scale(1) == 255 and png_scale(2) == 255 and png_scale(4) is None
