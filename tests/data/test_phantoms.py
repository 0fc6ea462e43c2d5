"""Tests of the phantom dataset generators (s4mi.data.phantoms)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage as ndi

from s4mi.data.phantoms import (
    CT3D_CLASSES,
    CXR_CLASSES,
    PHANTOMS,
    SKIN_CLASSES,
    generate_ct3d,
    generate_cxr,
    generate_polyp,
    generate_skin,
    make_phantom,
    nifti_affine,
)

SPLITS = ("training", "validation", "test")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _items(datalist: dict[str, Any]) -> list[dict[str, Any]]:
    return [it for key in SPLITS for it in datalist[key]]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def cxr300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom("cxr", tmp_path_factory.mktemp("cxr300"), n=300, seed=0, image_size=64)


@pytest.fixture(scope="module")
def skin300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom("skin", tmp_path_factory.mktemp("skin300"), n=300, seed=0, image_size=48)


# ---------------------------------------------------------------------------------------------------------------------
# API and argument checking
# ---------------------------------------------------------------------------------------------------------------------


def test_public_constants() -> None:
    assert PHANTOMS == ("cxr", "skin", "skin_seg", "polyp", "ct3d")
    findings = ("nodule", "mass", "effusion", "cardiomegaly", "pneumothorax", "consolidation")
    assert findings == CXR_CLASSES
    assert SKIN_CLASSES == ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cxr.*skin.*polyp.*ct3d"):
        make_phantom("mri", tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "skin", "dicom": True},
        {"name": "cxr", "n": 0},
        {"name": "cxr", "seed": -1},
        {"name": "cxr", "splits": (0.5, 0.1, 0.1)},
        {"name": "cxr", "splits": (1.2, -0.1, -0.1)},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_phantom(out_dir=tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# generators: shapes, dtypes, ranges
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128])
def test_generate_cxr_shapes(size: int) -> None:
    image, labels, lung = generate_cxr(np.random.default_rng(0), size)
    assert image.shape == (size, size) and image.dtype == np.uint8
    assert labels.shape == (len(CXR_CLASSES),) and set(np.unique(labels)) <= {0, 1}
    assert lung.shape == (size, size) and lung.dtype == np.uint8 and set(np.unique(lung)) == {0, 1}
    assert 0.1 < lung.mean() < 0.6
    assert image.std() > 20  # not a blank or flat image
    assert image[lung > 0].mean() < image[lung == 0].mean()  # aerated lungs are dark on a radiograph


def test_generate_skin_shapes() -> None:
    image, cls, mask = generate_skin(np.random.default_rng(0), 96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert isinstance(cls, int) and 0 <= cls < len(SKIN_CLASSES)
    assert mask.shape == (96, 96) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    with pytest.raises(ValueError):
        generate_skin(np.random.default_rng(0), 32, label=7)


def test_generate_polyp_shapes() -> None:
    image, mask = generate_polyp(np.random.default_rng(1), 80)
    assert image.shape == (80, 80, 3) and image.dtype == np.uint8
    assert mask.shape == (80, 80) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    mean_rgb = image.reshape(-1, 3).astype(float).mean(0)
    assert mean_rgb[0] > mean_rgb[1] and mean_rgb[0] > mean_rgb[2]  # reddish mucosa


def test_generate_ct3d_ranges() -> None:
    volume, labels = generate_ct3d(np.random.default_rng(0), 48)
    assert volume.shape == (48, 48, 48) and volume.dtype == np.int16
    assert labels.shape == (48, 48, 48) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(len(CT3D_CLASSES)))
    assert volume.min() >= -1024 and volume.max() <= 3071
    assert np.median(volume[0, :4, :4]) < -900  # air in the corner
    assert (volume > 300).sum() > 50  # bone
    assert ((volume > -150) & (volume < -50)).mean() > 0.02  # fat
    core = {k: ndi.binary_erosion(labels == k) for k in range(1, len(CT3D_CLASSES))}  # away from partial volume
    for k, region in core.items():
        assert region.sum() > 10 and 20 < volume[region].mean() < 90, CT3D_CLASSES[k]
    assert volume[core[1]].mean() > volume[core[3]].mean()  # liver is denser than kidney (unenhanced)


# ---------------------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "n", "size"), [("cxr", 5, 48), ("skin", 5, 48), ("polyp", 5, 48), ("ct3d", 2, 32)])
def test_determinism(tmp_path: Path, name: str, n: int, size: int) -> None:
    a = _files(make_phantom(name, tmp_path / "a", n=n, seed=3, image_size=size).parent)
    b = _files(make_phantom(name, tmp_path / "b", n=n, seed=3, image_size=size).parent)
    c = _files(make_phantom(name, tmp_path / "c", n=n, seed=4, image_size=size).parent)
    assert a == b
    assert set(a) == set(c)
    images = [k for k in a if k.startswith("images/")]
    assert len(images) == n
    assert all(a[k] != c[k] for k in images)
    assert not any(k.endswith(".tmp") for k in a)


def test_image_does_not_depend_on_n(tmp_path: Path) -> None:
    small = _files(make_phantom("polyp", tmp_path / "s", n=2, seed=1, image_size=40).parent)
    large = _files(make_phantom("polyp", tmp_path / "l", n=4, seed=1, image_size=40).parent)
    for key in ("images/polyp_00000.png", "images/polyp_00001.png", "masks/polyp_00001.png"):
        assert small[key] == large[key]


def test_dicom_is_deterministic(tmp_path: Path) -> None:
    a = make_phantom("cxr", tmp_path / "a", n=2, seed=0, image_size=32, dicom=True).parent
    b = make_phantom("cxr", tmp_path / "b", n=2, seed=0, image_size=32, dicom=True).parent
    assert _files(a) == _files(b)


# ---------------------------------------------------------------------------------------------------------------------
# datalists
# ---------------------------------------------------------------------------------------------------------------------


def _check_datalist(path: Path, name: str, task: str, n: int) -> dict[str, Any]:
    dl = _load(path)
    assert list(dl) == ["name", "description", "task", "modality", "classes", "seed", *SPLITS]
    assert dl["name"] == f"s4mi-phantom-{name}" and dl["task"] == task
    items = _items(dl)
    assert len(items) == n
    for item in items:
        for value in item.values():
            if isinstance(value, str):
                assert not Path(value).is_absolute() and "\\" not in value, value
                assert (path.parent / value).is_file(), value
    return dl


def test_cxr_datalist(cxr300: Path) -> None:
    dl = _check_datalist(cxr300, "cxr", "multilabel", 300)
    assert dl["classes"] == list(CXR_CLASSES)
    assert [len(dl[k]) for k in SPLITS] == [210, 30, 60]
    images = [it["image"] for it in _items(dl)]
    assert len(set(images)) == 300 and images[0].startswith("images/cxr_") and images[0].endswith(".png")
    for item in _items(dl)[:20]:
        assert set(item) == {"image", "label", "mask"}
        assert len(item["label"]) == len(CXR_CLASSES) and set(item["label"]) <= {0, 1}
        assert all(type(v) is int for v in item["label"])
        image, mask = _png(cxr300.parent / item["image"]), _png(cxr300.parent / item["mask"])
        assert image.shape == (64, 64) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 1}  # label values, not 0/255


def test_skin_datalist_and_stratification(skin300: Path) -> None:
    dl = _check_datalist(skin300, "skin", "multiclass", 300)
    assert dl["classes"] == list(SKIN_CLASSES)
    for item in _items(dl):
        assert set(item) == {"image", "label", "mask"}
        assert len(item["label"]) == 7 and sum(item["label"]) == 1 and set(item["label"]) <= {0, 1}
    for key in SPLITS:  # stratified: classes with >= 3 images are in every part
        counts = np.sum([it["label"] for it in dl[key]], axis=0)
        total = np.sum([it["label"] for it in _items(dl)], axis=0)
        assert np.all(counts[total >= 3] > 0), (key, counts)
    item = dl["training"][0]
    image = _png(skin300.parent / item["image"])
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert set(np.unique(_png(skin300.parent / item["mask"]))) == {0, 1}


def test_polyp_datalist_and_masks(tmp_path: Path) -> None:
    path = make_phantom("polyp", tmp_path, n=60, seed=0, image_size=64, splits=(0.5, 0.25, 0.25))
    dl = _check_datalist(path, "polyp", "segmentation", 60)
    assert dl["classes"] == ["background", "polyp"]
    assert [len(dl[k]) for k in SPLITS] == [30, 15, 15]
    non_empty, edge_ratios = 0, []
    for item in _items(dl):
        assert set(item) == {"image", "label"} and item["label"].startswith("masks/")
        image, mask = _png(path.parent / item["image"]), _png(path.parent / item["label"])
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1}
        if mask.any():
            non_empty += 1
            # the polyp is drawn where the mask says: its outline carries more edge energy than the frame does
            lum = ndi.gaussian_filter(image.astype(float).mean(-1), 1.0)
            grad = np.hypot(*np.gradient(lum))
            fov = ndi.binary_erosion(lum > 15, iterations=3)
            rim = (ndi.binary_dilation(mask > 0, iterations=2) ^ ndi.binary_erosion(mask > 0, iterations=2)) & fov
            if rim.sum() >= 5:
                edge_ratios.append(grad[rim].mean() / grad[fov].mean())
    assert non_empty >= 0.85 * 60
    assert np.median(edge_ratios) > 1.3


def test_ct3d_nifti(tmp_path: Path) -> None:
    path = make_phantom("ct3d", tmp_path, n=3, seed=0, image_size=32, splits=(1 / 3, 1 / 3, 1 / 3))
    dl = _check_datalist(path, "ct3d", "segmentation", 3)
    assert dl["classes"] == list(CT3D_CLASSES)
    item = _items(dl)[0]
    assert item["image"].endswith(".nii.gz") and item["label"].startswith("labels/")
    image = nib.nifti1.load(path.parent / item["image"])
    label = nib.nifti1.load(path.parent / item["label"])
    assert image.shape == (32, 32, 32) and image.get_data_dtype() == np.int16
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, nifti_affine(32))
    np.testing.assert_allclose(label.affine, image.affine)
    assert np.allclose(np.abs(np.diag(image.affine)[:3]), (1.5, 1.5, 2.5))
    assert np.abs(image.affine[:3, 3]).sum() > 0
    values = np.unique(np.asanyarray(label.dataobj))
    assert values.min() == 0 and values.max() <= len(CT3D_CLASSES) - 1
    # the file holds the generator's (D, H, W) volume transposed to (i, j, k) = (W, H, D)
    volume, labels = generate_ct3d(np.random.default_rng([0, 0, _code("ct3d")]), 32)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), volume.transpose(2, 1, 0))
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), labels.transpose(2, 1, 0))


def _code(name: str) -> int:
    from s4mi.data.phantoms._common import _name_code

    return _name_code(name)


def test_cxr_dicom_readable(tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    path = make_phantom("cxr", tmp_path, n=3, seed=0, image_size=64, dicom=True)
    item = _items(_load(path))[0]
    assert item["image"].endswith(".dcm")
    file = path.parent / item["image"]
    ds = pydicom.dcmread(file)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == "DX"
    expected, _, _ = generate_cxr(np.random.default_rng([0, int(file.stem[-5:]), _code("cxr")]), 64)
    np.testing.assert_array_equal(ds.pixel_array, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = np.asarray(LoadImage(reader="PydicomReader", image_only=True)(str(file))).squeeze()
    assert loaded.shape == (64, 64)
    assert np.array_equal(loaded, expected.T) or np.array_equal(loaded, expected)


# ---------------------------------------------------------------------------------------------------------------------
# prevalence and class balance
# ---------------------------------------------------------------------------------------------------------------------


def test_cxr_prevalence(cxr300: Path) -> None:
    labels = np.array([it["label"] for it in _items(_load(cxr300))])
    assert 0.3 <= (labels.sum(1) == 0).mean() <= 0.7
    prevalence = labels.mean(0)
    assert np.all(prevalence > 0.015) and np.all(prevalence < 0.3), prevalence
    assert (labels.sum(1) >= 2).any()  # co-occurrence


def test_skin_seg_is_the_skin_phantom_as_segmentation(tmp_path: Path) -> None:
    """skin_seg writes the skin phantom's files byte for byte, with the same split, and labels its items by mask."""
    skin = make_phantom("skin", tmp_path / "skin", n=12, seed=0, image_size=32)
    seg = make_phantom("skin_seg", tmp_path / "seg", n=12, seed=0, image_size=32)
    a, b = _files(skin.parent), _files(seg.parent)
    assert {k: v for k, v in a.items() if k != "datalist.json"} == {k: v for k, v in b.items() if k != "datalist.json"}
    da, db = _load(skin), _load(seg)
    assert db["task"] == "segmentation" and db["classes"] == ["background", "lesion"]
    for section in ("training", "validation", "test"):
        assert [{"image": i["image"], "label": i["mask"]} for i in da[section]] == db[section]


def test_skin_imbalance(skin300: Path) -> None:
    counts = np.sum([it["label"] for it in _items(_load(skin300))], axis=0)
    assert np.all(counts > 0), counts
    assert counts.argmax() == SKIN_CLASSES.index("NV") and counts[1] > 0.5 * counts.sum()
    assert counts[SKIN_CLASSES.index("MEL")] > counts[SKIN_CLASSES.index("DF")]


def test_skin_all_classes_at_200(tmp_path: Path) -> None:
    from s4mi.data.phantoms.skin import _skin_schedule

    for seed in range(50):
        assert len(set(_skin_schedule(200, seed))) == len(SKIN_CLASSES)


# ---------------------------------------------------------------------------------------------------------------------
# findings are drawn, not just written in the label
# ---------------------------------------------------------------------------------------------------------------------


def _cxr_pair(finding: int, i: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    none = [0] * len(CXR_CLASSES)
    one = list(none)
    one[finding] = 1
    a, _, mask_a = generate_cxr(np.random.default_rng([11, i]), size, labels=none)
    b, lab, mask_b = generate_cxr(np.random.default_rng([11, i]), size, labels=one)
    assert list(lab) == one
    return a.astype(float), b.astype(float), mask_a, mask_b


@pytest.mark.parametrize("finding", ["nodule", "mass", "effusion", "consolidation", "pneumothorax"])
def test_cxr_lung_findings_are_drawn(finding: str) -> None:
    k = CXR_CLASSES.index(finding)
    signs, ratios = [], []
    for i in range(8):
        a, b, mask, _ = _cxr_pair(k, i)
        diff = b - a
        lung = mask > 0
        ratios.append(np.abs(diff[lung]).sum() / (np.abs(diff[~lung]).sum() + 1.0))
        signs.append(diff[lung].mean())
    assert np.median(ratios) > 2.0  # the change happens inside the lung fields
    if finding == "pneumothorax":
        assert np.mean(signs) < 0  # extra air: darker
    else:
        assert np.mean(signs) > 0  # opacity: brighter


def test_cxr_cardiomegaly_is_drawn(cxr300: Path) -> None:
    k = CXR_CLASSES.index("cardiomegaly")
    for i in range(6):  # the same patient with a larger heart: less visible lung, brighter heart region
        a, b, mask_a, mask_b = _cxr_pair(k, i)
        assert mask_b.sum() < mask_a.sum()
        assert b.mean() > a.mean()
    # across the dataset, a wider heart shows as a wider gap between the lung fields in the lower lung
    items = _items(_load(cxr300))
    gaps: dict[int, list[int]] = {0: [], 1: []}
    for item in items:
        mask = _png(cxr300.parent / item["mask"]) > 0
        rows = np.flatnonzero(mask.any(1))
        lower = mask[rows[int(0.6 * len(rows))] : rows[int(0.85 * len(rows))]]
        cols = np.flatnonzero(lower.any(0))
        inner = (~lower[:, cols.min() : cols.max() + 1]).all(0).sum()  # columns with no lung at all
        gaps[item["label"][k]].append(inner)
    assert np.mean(gaps[1]) > np.mean(gaps[0]) + 1.0


def test_skin_classes_are_drawn() -> None:
    stats: dict[str, dict[str, float]] = {}
    for c, name in enumerate(SKIN_CLASSES):
        lum, red, area = [], [], []
        for i in range(12):
            image, cls, mask = generate_skin(np.random.default_rng([9, i, c]), 64, label=c)
            assert cls == c
            inside = image[mask > 0].astype(float).mean(0) / 255.0
            lum.append(inside.mean())
            red.append(inside[0] - inside[1])
            area.append(mask.mean())
        stats[name] = {"lum": float(np.mean(lum)), "red": float(np.mean(red)), "area": float(np.mean(area))}
    assert stats["MEL"]["lum"] < stats["NV"]["lum"]  # melanomas are darker
    assert stats["MEL"]["area"] > stats["NV"]["area"] > stats["DF"]["area"]  # and larger; dermatofibromas small
    assert stats["VASC"]["red"] > stats["NV"]["red"] + 0.03  # vascular lesions are red/purple
    assert stats["BCC"]["lum"] > stats["NV"]["lum"]  # pink-white, not brown
