"""The catalogue of bad inputs: each stops with its error type and message, and changes nothing already written.

Each case builds its bad input in a fresh folder beside files a user already has (a datalist, a resume checkpoint,
a model, a pseudo label, an annotator's label), runs what a user would run on it, and checks the error type, the
words of the message, and that every one of those files is bitwise unchanged. ``docs/bad_inputs.md`` holds this
table; ``test_docs_table_matches_the_catalogue`` fails when the two drift apart (``python
tests/test_bad_input_catalogue.py`` rewrites the doc).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from s4mi.bundle import BundleConfigError, check_overrides
from s4mi.bundle.outputs import OutputFolderError, ensure_writable
from s4mi.data.check import DataCheckError, LeakageError, check_data
from s4mi.data.datalist import DatalistError, load_datalist, save_datalist
from s4mi.data.prepare import prepare_datalist
from s4mi.data.split import label_fraction_split
from s4mi.handlers import ResumeLoader, ResumeSaver
from s4mi.handlers.checkpoint import CheckpointError, latest_checkpoint
from s4mi.handlers.pretrained import load_pretrained_backbone
from tests.test_bundle_overrides import _argv

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "bad_inputs.md"


@dataclass(frozen=True)
class Case:
    id: str
    input: str
    error: type[BaseException]
    words: str
    run: Callable[[Path], Any]


# ------------------------------------------------------------------------------------------------ builders
def _png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return str(path)


def _noise(seed: int, shape: tuple[int, ...] = (16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape)


def _datalist(d: Path, n: int = 6, channels: int = 1) -> dict[str, Any]:
    shape = (16, 16) if channels == 1 else (16, 16, channels)
    img = [_png(d / f"img{i}.png", _noise(i, shape)) for i in range(n)]
    return {
        "classes": ["a", "b"],
        "training": [{"image": img[0], "label": [1, 0]}, {"image": img[1], "label": [0, 1]}],
        "unlabeled": [{"image": img[2]}, {"image": img[3]}],
        "validation": [{"image": img[4], "label": [1, 0]}],
        "test": [{"image": img[5], "label": [0, 1]}],
    }


def _check(data: dict[str, Any], **kwargs: Any) -> Any:
    args: dict[str, Any] = {"in_channels": 1, "spatial_dims": 2, "num_classes": 2}
    args.update(kwargs)
    return check_data(data, **args)


def _item(d: Path, image: str, section: str = "training", **extra: Any) -> dict[str, Any]:
    data = _datalist(d)
    data[section] = [{"image": image, **({"label": [1, 0]} if section != "unlabeled" else {}), **extra}]
    return data


def _write(d: Path, data: dict[str, Any], name: str = "datalist.json") -> Path:
    path = d / name
    path.write_text(json.dumps(data))
    return path


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return str(path)


def _seg_datalist(d: Path, image: str, label: str) -> dict[str, Any]:
    return {"training": [{"image": image, "label": label}], "unlabeled": [], "validation": [], "test": []}


class _Net(torch.nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, width)


def _resume_ckpt(d: Path, objects: dict[str, Any]) -> Path:
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    ResumeSaver(str(d / "resume"), objects).attach(engine)
    engine.run([0], max_epochs=1)
    return next((d / "resume").glob("*.pt"))


def _resume_into(path: Path, objects: dict[str, Any]) -> None:
    from ignite.engine import Engine

    steps: list[int] = []
    engine = Engine(lambda e, b: steps.append(1))
    ResumeLoader(str(path), objects).attach(engine)
    try:
        engine.run([0], max_epochs=2)
    finally:
        assert not steps, "a training step ran before the checkpoint error"


# ------------------------------------------------------------------------------------------------ the cases
def _missing_image(d: Path) -> Any:
    return load_datalist(_write(d, _item(d, str(d / "nowhere.png"))))


def _absolute_elsewhere(d: Path) -> Any:
    return load_datalist(_write(d, _item(d, "/data/other-machine/cxr/00001.png")))


def _corrupt_png(d: Path) -> Any:
    bad = d / "bad.png"
    bad.write_bytes(Path(_png(d / "ok.png", _noise(9))).read_bytes()[:60])
    return _check(_item(d, str(bad)))


def _corrupt_nifti(d: Path) -> Any:
    bad = d / "bad.nii.gz"
    bad.write_bytes(Path(_nifti(d / "ok.nii.gz", np.ones((8, 8, 8), np.float32))).read_bytes()[:40])
    return _check(_item(d, str(bad)), spatial_dims=3)


def _corrupt_dicom(d: Path) -> Any:
    import pydicom.data

    bad = d / "bad.dcm"
    bad.write_bytes(Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()[:500])
    return _check(_item(d, str(bad)))


def _wrong_channels(d: Path) -> Any:
    return _check(_item(d, _png(d / "rgb.png", _noise(3, (16, 16, 3)))))


def _mask_shape(d: Path) -> Any:
    image = _nifti(d / "ct.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    label = _nifti(d / "seg.nii.gz", np.zeros((8, 8, 6), np.uint8))
    return _check(_seg_datalist(d, image, label), spatial_dims=3, num_classes=None)


def _mask_geometry(d: Path) -> Any:
    image = _nifti(d / "ct.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    label = _nifti(d / "seg.nii.gz", np.zeros((8, 8, 8), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    return _check(_seg_datalist(d, image, label), spatial_dims=3, num_classes=None)


def _mask_values(d: Path) -> Any:
    from monai.transforms import LoadImaged

    from s4mi.transforms.masks import SegmentationLabeld

    mask = np.zeros((16, 16), np.uint8)
    mask[8:, 8:] = 3
    item = {"image": _png(d / "f.png", _noise(1)), "label": _png(d / "m.png", mask)}
    loaded = LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True)(item)
    return SegmentationLabeld("label", num_classes=3)(loaded)


def _vector_length(d: Path) -> Any:
    data = _datalist(d)
    data["classes"] = ["a", "b", "c"]
    for s in ("training", "validation", "test"):
        for item in data[s]:
            item["label"] = [*item["label"], 0]
    return _check(data)


def _vector_inconsistent(d: Path) -> Any:
    data = _datalist(d)
    data["training"][1]["label"] = [0, 1, 0]
    return load_datalist(_write(d, data))


def _empty_labelled(d: Path) -> Any:
    data = _datalist(d)
    data["training"] = []
    return _check(data)


def _empty_unlabelled(d: Path) -> Any:
    data = _datalist(d)
    data["unlabeled"] = []
    return _check(data, needs_unlabeled=True)


def _fraction_zero(d: Path) -> Any:
    return prepare_datalist("", _write(d, _datalist(d)), label_fraction=0.0)


def _fraction_above_one(d: Path) -> Any:
    return prepare_datalist("", _write(d, _datalist(d)), label_fraction=1.5)


def _fraction_loses_class(d: Path) -> Any:
    data = _datalist(d, n=10)
    data["training"] = [{"image": data["training"][0]["image"], "label": [1, 0]}] + [
        {"image": str(d / f"img{i}.png"), "label": [1, 0]} for i in range(6, 10)
    ]
    data["training"].append({"image": str(d / "img1.png"), "label": [0, 1]})
    return label_fraction_split(data, 0.2, seed=0, strategy="first")


def _nan_image(d: Path) -> Any:
    image = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    image[1, 2, 3] = np.nan
    return _check(_item(d, _nifti(d / "nan.nii.gz", image)), spatial_dims=3)


def _constant_image(d: Path) -> Any:
    return _check(_item(d, _png(d / "blank.png", np.zeros((16, 16)))))


def _volume_to_2d(d: Path) -> Any:
    return _check(_item(d, _nifti(d / "vol.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))))


def _image_to_3d(d: Path) -> Any:
    return _check(_item(d, _png(d / "slice.png", _noise(40))), spatial_dims=3)


def _unknown_override(d: Path) -> Any:
    return check_overrides(True, _argv("supervised_polyp_segmentation", "train", "--max_epoch", "2"))


def _override_type(d: Path) -> Any:
    return check_overrides(True, _argv("supervised_polyp_segmentation", "train", "--max_epochs", "ten"))


def _override_list_type(d: Path) -> Any:
    return check_overrides(True, _argv("supervised_polyp_segmentation", "train", "--spatial_size", "64"))


def _split_twice(d: Path) -> Any:
    once = label_fraction_split(_datalist(d), 0.5, seed=0)
    return label_fraction_split(once, 0.5, seed=0)


def _split_twice_in_bundle(d: Path) -> Any:
    once = save_datalist(label_fraction_split(_datalist(d), 0.5, seed=0), d / "split.json")
    return prepare_datalist("", once, label_fraction=0.2)


def _duplicate_across_sections(d: Path) -> Any:
    data = _datalist(d)
    data["test"].append({"image": data["training"][0]["image"], "label": [1, 0]})
    return _check(data, read_images=False)


def _test_in_unlabelled(d: Path) -> Any:
    data = _datalist(d)
    data["unlabeled"].append({"image": data["test"][0]["image"]})
    return _check(data, read_images=False)


def _unlabelled_with_label(d: Path) -> Any:
    data = _datalist(d)
    data["unlabeled"][0]["label"] = [1, 0]
    return load_datalist(_write(d, data))


def _unknown_section(d: Path) -> Any:
    data = _datalist(d)
    data["unlabelled"] = data.pop("unlabeled")
    return load_datalist(_write(d, data))


def _invalid_json(d: Path) -> Any:
    path = d / "datalist.json"
    path.write_text('{"training": [{"image": "a.png", "label": [1, 0]},]}')
    return load_datalist(path)


def _resume_other_bundle(d: Path) -> Any:
    path = _resume_ckpt(d, {"model": _Net(), "teacher": _Net()})
    return _resume_into(path, {"model": _Net()})


def _resume_other_shape(d: Path) -> Any:
    path = _resume_ckpt(d, {"model": _Net(4)})
    return _resume_into(path, {"model": _Net(5)})


def _resume_truncated(d: Path) -> Any:
    path = _resume_ckpt(d, {"model": _Net()})
    path.write_bytes(path.read_bytes()[:100])
    return latest_checkpoint(path.parent, max_epochs=3)


def _pretrained_truncated(d: Path) -> Any:
    path = d / "pretrained.pt"
    torch.save(_Net().state_dict(), path)
    path.write_bytes(path.read_bytes()[:50])
    return load_pretrained_backbone(_Net(), path, exclude=())


def _read_only_folder(d: Path) -> Any:
    blocker = d / "models"
    blocker.write_text("a file where the checkpoint folder should be")
    return ensure_writable(blocker / "run", 0, "checkpoints")


def _full_folder(d: Path) -> Any:
    return ensure_writable(d / "models", 1 << 60, "resume checkpoints")


CASES: list[Case] = [
    Case("missing-image", "datalist item whose image file is missing", DatalistError, "file not found", _missing_image),
    Case(
        "absolute-path-elsewhere",
        "datalist with absolute paths from another machine",
        DatalistError,
        "file not found: /data/other-machine/cxr/00001.png",
        _absolute_elsewhere,
    ),
    Case("corrupt-png", "truncated PNG", DataCheckError, "cannot be read as an image", _corrupt_png),
    Case("corrupt-nifti", "truncated NIfTI", DataCheckError, "cannot be read as an image", _corrupt_nifti),
    Case("corrupt-dicom", "truncated DICOM", DataCheckError, "cannot be read as an image", _corrupt_dicom),
    Case("wrong-channels", "RGB image for a 1-channel network", DataCheckError, "has 3 channel(s)", _wrong_channels),
    Case("mask-shape", "mask of another shape than its image", DataCheckError, "has spatial shape", _mask_shape),
    Case("mask-geometry", "mask of another geometry (affine)", DataCheckError, "another geometry", _mask_geometry),
    Case("mask-values", "mask values beyond num_classes", ValueError, "do not fit num_classes 3", _mask_values),
    Case(
        "vector-vs-num-classes",
        "multi-label vector longer than num_classes",
        DatalistError,
        "a label vector of length 3, but the bundle has num_classes 2",
        _vector_length,
    ),
    Case(
        "vector-inconsistent",
        "label vectors of different lengths",
        DatalistError,
        "has length 3 but len(classes) gives 2",
        _vector_inconsistent,
    ),
    Case("empty-labelled", "empty labelled set", DataCheckError, "labelled set ('training') is empty", _empty_labelled),
    Case(
        "empty-unlabelled",
        "empty unlabelled set for a semi-supervised bundle",
        DataCheckError,
        "unlabelled set ('unlabeled') is empty",
        _empty_unlabelled,
    ),
    Case("fraction-zero", "label_fraction 0", ValueError, "label_fraction must be in (0, 1]", _fraction_zero),
    Case(
        "fraction-above-one", "label_fraction 1.5", ValueError, "label_fraction must be in (0, 1]", _fraction_above_one
    ),
    Case(
        "fraction-loses-class",
        "a fraction that leaves a class without labels",
        ValueError,
        "leaves ['b'] without any labelled image",
        _fraction_loses_class,
    ),
    Case("nan-image", "image with NaN values", DataCheckError, "NaN or infinite values", _nan_image),
    Case("constant-image", "constant (blank) image", DataCheckError, "the image is constant", _constant_image),
    Case("3d-to-2d", "3D volume given to a 2D bundle", DataCheckError, "a 3D image", _volume_to_2d),
    Case("2d-to-3d", "2D image given to a 3D bundle", DataCheckError, "a 2D image", _image_to_3d),
    Case(
        "unknown-override",
        "unknown override key",
        BundleConfigError,
        "--max_epoch names nothing in",
        _unknown_override,
    ),
    Case(
        "override-type",
        "override of the wrong type (text for a number)",
        BundleConfigError,
        "--max_epochs 'ten' is a string but max_epochs is a number",
        _override_type,
    ),
    Case(
        "override-list-type",
        "override of the wrong type (number for a list)",
        BundleConfigError,
        "--spatial_size 64 is a number but spatial_size is a list",
        _override_list_type,
    ),
    Case("split-twice", "datalist split twice", ValueError, "this datalist is already split", _split_twice),
    Case(
        "split-twice-bundle",
        "split datalist given to a bundle at another fraction",
        ValueError,
        "records a split at label fraction 0.5",
        _split_twice_in_bundle,
    ),
    Case(
        "duplicate-across-sections",
        "the same item in training and test",
        LeakageError,
        "are the same image",
        _duplicate_across_sections,
    ),
    Case(
        "test-in-unlabelled",
        "a test image inside the unlabelled pool",
        LeakageError,
        "test item 0 and unlabeled item 2 are the same image",
        _test_in_unlabelled,
    ),
    Case(
        "unlabelled-with-label",
        "unlabelled item carrying a label",
        DatalistError,
        "'unlabeled' items must hold no label keys",
        _unlabelled_with_label,
    ),
    Case("unknown-section", "misspelt section name", DatalistError, "did you mean 'unlabeled'?", _unknown_section),
    Case("invalid-json", "datalist that is not valid JSON", DatalistError, "invalid JSON at line 1", _invalid_json),
    Case(
        "checkpoint-other-bundle",
        "resume checkpoint of another bundle",
        CheckpointError,
        "is not one of this training stage's",
        _resume_other_bundle,
    ),
    Case(
        "checkpoint-other-shape",
        "resume checkpoint of another network shape",
        CheckpointError,
        "does not fit this network",
        _resume_other_shape,
    ),
    Case(
        "checkpoint-truncated",
        "truncated resume checkpoint",
        CheckpointError,
        "cannot be read: it is truncated",
        _resume_truncated,
    ),
    Case(
        "pretrained-truncated",
        "truncated pretrained checkpoint",
        CheckpointError,
        "pretrained weights",
        _pretrained_truncated,
    ),
    Case(
        "output-not-writable",
        "output folder that cannot be written",
        OutputFolderError,
        "cannot write checkpoints to",
        _read_only_folder,
    ),
    Case("output-full", "output folder without free space", OutputFolderError, "free but its", _full_folder),
]


def _existing_outputs(root: Path) -> dict[str, Path]:
    """Files a user already has beside the bad input: none of them may change."""
    out = root / "existing"
    out.mkdir()
    files = {
        "datalist": save_datalist({"training": [{"image": "x.png", "label": [1, 0]}]}, out / "datalist.json"),
        "checkpoint": out / "resume" / "checkpoint_iteration=10.pt",
        "model": out / "models" / "model.pt",
        "pseudo label": out / "pseudo_labels" / "img0_pseudo.png",
        "annotator label": out / "labels" / "final" / "img0.png",
    }
    for key in ("checkpoint", "model"):
        files[key].parent.mkdir(parents=True)
        torch.save({"w": torch.arange(4.0)}, files[key])
    for key in ("pseudo label", "annotator label"):
        files[key].parent.mkdir(parents=True)
        _png(files[key], _noise(7))
    return files


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_catalogue_has_at_least_25_cases_with_unique_ids() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    existing = _existing_outputs(tmp_path)
    before = {k: _digest(p) for k, p in existing.items()}
    work = tmp_path / "case"
    work.mkdir()
    with pytest.raises(case.error) as info:
        case.run(work)
    text = str(info.value)
    assert case.words in text, f"{case.id}: {text}"
    assert {k: _digest(p) for k, p in existing.items()} == before


def render_table() -> str:
    rows = ["| input | error | message contains |", "|---|---|---|"]
    rows += ["| {} | `{}` | `{}` |".format(c.input, c.error.__name__, c.words.replace("|", "\\|")) for c in CASES]
    return "\n".join(rows) + "\n"


_BEGIN, _END = "<!-- catalogue: begin -->\n", "<!-- catalogue: end -->\n"


def test_docs_table_matches_the_catalogue() -> None:
    text = DOC.read_text()
    table = text.split(_BEGIN, 1)[1].split(_END, 1)[0]
    assert table == render_table(), f"{DOC} differs from the catalogue: run python {Path(__file__).relative_to(REPO)}"


if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(_BEGIN, 1)
    DOC.write_text(head + _BEGIN + render_table() + _END + rest.split(_END, 1)[1])
    print(f"wrote {DOC}")
