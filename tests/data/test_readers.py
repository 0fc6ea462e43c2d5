"""MONAI's LoadImaged reads what s4mi datalists point at; s4mi.data.readers fills the DICOM-file-list gap."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged
from nibabel.testing import data_path as nib_data_path
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from s4mi.data.datalist import load_datalist
from s4mi.data.readers import DicomSeriesReader, image_loader, is_dicom_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_SLICES = 3
SLICE_GAP = 2.5


def _gray(h: int = 12, w: int = 10) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint8) * 2).reshape(h, w)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three CT slices of one series, written in reverse file-name order to prove sorting by InstanceNumber."""
    folder = tmp_path_factory.mktemp("series")
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    for i in range(N_SLICES):
        ds = copy.deepcopy(src)
        ds.PixelData = np.full((src.Rows, src.Columns), 100 * i, dtype=np.int16).tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + SLICE_GAP * i]
        ds.SliceLocation = -75.0 + SLICE_GAP * i
        ds.SliceThickness = SLICE_GAP
        ds.save_as(folder / f"slice_{N_SLICES - 1 - i}.dcm")
    return folder


def _intercept() -> float:
    return float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).RescaleIntercept)


# --------------------------------------------------------------------------------------------------------------------
# 2D formats


def test_png_grayscale(tmp_path: Path) -> None:
    arr = _gray()
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = LoadImaged("image")({"image": str(tmp_path / "g.png")})["image"]
    assert isinstance(img, MetaTensor)
    # MONAI's PILReader indexes (x, y): an H x W image loads as W x H
    assert tuple(img.shape) == (10, 12)
    np.testing.assert_array_equal(img.numpy(), arr.T)
    assert img.meta["filename_or_obj"] == str(tmp_path / "g.png")


def test_png_16bit_keeps_range(tmp_path: Path) -> None:
    arr = np.linspace(0, 60000, 12 * 10).astype(np.uint16).reshape(12, 10)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = LoadImaged("image")({"image": str(tmp_path / "g16.png")})["image"]
    np.testing.assert_array_equal(img.numpy(), arr.T.astype(np.float32))


def test_png_rgb_and_channel_first(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    img = LoadImaged("image")({"image": str(tmp_path / "rgb.png")})["image"]
    assert tuple(img.shape) == (10, 12, 3)
    np.testing.assert_array_equal(img.numpy(), arr.transpose(1, 0, 2))
    img = image_loader("image")({"image": str(tmp_path / "rgb.png")})["image"]
    assert tuple(img.shape) == (3, 10, 12)


def test_jpeg(tmp_path: Path) -> None:
    arr = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    rgb = np.stack([arr, arr.T, 255 - arr], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    Image.fromarray(arr).save(tmp_path / "g.jpeg", quality=95)
    img = LoadImaged("image")({"image": str(tmp_path / "x.jpg")})["image"]
    assert tuple(img.shape) == (16, 16, 3)
    assert np.abs(img.numpy() - rgb.transpose(1, 0, 2)).mean() < 4  # lossy
    gray = LoadImaged("image")({"image": str(tmp_path / "g.jpeg")})["image"]
    assert tuple(gray.shape) == (16, 16)


# --------------------------------------------------------------------------------------------------------------------
# DICOM


@pytest.mark.parametrize(("name", "shape"), [("CT_small.dcm", (128, 128)), ("MR_small.dcm", (64, 64))])
def test_single_dicom(name: str, shape: tuple[int, int]) -> None:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    img = LoadImaged("image")({"image": path})["image"]
    assert tuple(img.shape) == shape
    expected = ds.pixel_array * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
    np.testing.assert_allclose(img.numpy(), expected.T)
    spacing = [float(s) for s in ds.PixelSpacing]
    np.testing.assert_allclose(np.abs(np.diag(img.affine.numpy()))[:2], spacing[::-1], rtol=1e-5)
    assert is_dicom_file(path)


def test_dicom_series_folder(series_dir: Path) -> None:
    img = LoadImage(reader="PydicomReader")(str(series_dir))
    assert tuple(img.shape) == (128, 128, N_SLICES)
    slice_means = [float(img[..., k].mean()) for k in range(N_SLICES)]
    assert slice_means == [100 * k + _intercept() for k in range(N_SLICES)]  # ordered by InstanceNumber
    assert img.affine[2, 2].item() == pytest.approx(SLICE_GAP)
    # the default reader choice picks pydicom for a folder too
    auto = LoadImaged("image")({"image": str(series_dir)})["image"]
    assert torch.equal(auto, img)


def test_dicom_series_matches_simpleitk(series_dir: Path) -> None:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    ref = sitk.GetArrayFromImage(reader.Execute())  # (z, y, x)
    img = LoadImage(reader="PydicomReader")(str(series_dir))  # (x, y, z)
    np.testing.assert_allclose(img.numpy(), ref.transpose(2, 1, 0))


def test_dicom_series_as_file_list(series_dir: Path) -> None:
    files = sorted(str(p) for p in series_dir.glob("*.dcm"))
    loader = image_loader("image")
    vol = loader({"image": files})["image"]
    folder = loader({"image": str(series_dir)})["image"]
    assert tuple(vol.shape) == (1, 128, 128, N_SLICES)
    assert torch.equal(vol, folder)
    np.testing.assert_allclose(vol.affine.numpy(), folder.affine.numpy())

    direct = DicomSeriesReader()
    assert direct.verify_suffix(files) and not direct.verify_suffix(files[0])
    assert not direct.verify_suffix(["a.png", "b.png"])


def test_file_list_of_different_series_stays_channels(series_dir: Path, tmp_path: Path) -> None:
    # MONAI's meaning of a list (one channel per file) is kept when the files are not one series
    src = pydicom.dcmread(next(series_dir.glob("*.dcm")))
    names = []
    for i in range(2):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = generate_uid()
        names.append(str(tmp_path / f"view{i}.dcm"))
        ds.save_as(names[-1])
    img = image_loader("image")({"image": names})["image"]
    assert tuple(img.shape) == (2, 128, 128)


def test_multichannel_png_list_unchanged(tmp_path: Path) -> None:
    for i in range(2):
        Image.fromarray(_gray() + i).save(tmp_path / f"c{i}.png")
    img = image_loader("image")({"image": [str(tmp_path / "c0.png"), str(tmp_path / "c1.png")]})["image"]
    assert tuple(img.shape) == (2, 10, 12)
    np.testing.assert_array_equal(img[1].numpy() - img[0].numpy(), np.ones((10, 12)))


# --------------------------------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_3d_affine_preserved() -> None:
    path = str(Path(nib_data_path) / "anatomical.nii")
    ref = nib.load(path)
    data = LoadImaged("image", image_only=False)({"image": path})
    img = data["image"]
    assert tuple(img.shape) == ref.shape
    np.testing.assert_allclose(img.meta["affine"].numpy(), ref.affine)
    np.testing.assert_allclose(data["image_meta_dict"]["affine"].numpy(), ref.affine)
    np.testing.assert_allclose(img.numpy(), ref.get_fdata(), rtol=1e-6)


def test_nifti_4d_gz() -> None:
    path = str(Path(nib_data_path) / "example4d.nii.gz")
    ref = nib.load(path)
    img = LoadImaged("image")({"image": path})["image"]
    assert tuple(img.shape) == ref.shape == (128, 96, 24, 2)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, rtol=1e-6)
    # channel-first moves the 4th (time/channel) axis to the front
    assert tuple(image_loader("image")({"image": path})["image"].shape) == (2, 128, 96, 24)


# --------------------------------------------------------------------------------------------------------------------
# end to end: a datalist on disk


def test_loader_reads_every_item_of_a_datalist(tmp_path: Path, series_dir: Path) -> None:
    Image.fromarray(_gray()).save(tmp_path / "xray.png")
    Image.fromarray((_gray() > 100).astype(np.uint8)).save(tmp_path / "xray_mask.png")
    Image.fromarray(np.dstack([_gray()] * 3)).save(tmp_path / "derm.jpg")
    files = sorted(p.name for p in series_dir.glob("*.dcm"))
    datalist = {
        "task": "multilabel",
        "classes": ["a", "b"],
        "training": [
            {"image": "xray.png", "label": [1, 0], "mask": "xray_mask.png"},
            {"image": "derm.jpg", "label": [0, 1]},
            {"image": str(series_dir), "label": [1, 1]},
            {"image": [str(series_dir / f) for f in files], "label": [0, 0]},
            {"image": get_testdata_file("MR_small.dcm"), "label": [0, 1]},
            {"image": str(Path(nib_data_path) / "anatomical.nii"), "label": [1, 0]},
        ],
        "unlabeled": [{"image": "xray.png"}],
    }
    (tmp_path / "dl.json").write_text(json.dumps(datalist), encoding="utf-8")
    dl = load_datalist(tmp_path / "dl.json")
    loader = image_loader(["image", "mask"], allow_missing_keys=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = [tuple(loader(item)["image"].shape) for item in dl["training"] + dl["unlabeled"]]
    assert shapes == [
        (1, 10, 12),
        (3, 10, 12),
        (1, 128, 128, N_SLICES),
        (1, 128, 128, N_SLICES),
        (1, 64, 64),
        (1, 33, 41, 25),
        (1, 10, 12),
    ]
    first = loader(dl["training"][0])
    assert tuple(first["mask"].shape) == (1, 10, 12)
    assert first["label"] == [1, 0]
