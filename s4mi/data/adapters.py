"""Adapters from public datasets' own on-disk layouts to s4mi datalists.

Each adapter reads a dataset exactly as its maintainers distribute it and returns a MONAI decathlon-style datalist
dict (``name``, ``description``, ``task``, ``modality``, ``classes`` and the sections ``training``, ``unlabeled``,
``validation``, ``test``) whose paths are POSIX paths relative to the dataset root given to the adapter.

Supported datasets:

* ``chestxray14``: NIH ChestX-ray14 (also the Kaggle ``images_XXX/images`` layout).
* ``chexpert``: CheXpert-v1.0 / CheXpert-v1.0-small, with the U-Ones / U-Zeros / U-Ignore uncertainty policies.
* ``isic2018``: ISIC 2018 Task 3 (HAM10000) lesion classification.
* ``kvasir``: Kvasir-SEG polyp segmentation.
* ``pranet``: the PraNet polyp benchmark (``TrainDataset`` + ``TestDataset/<Set>``).
* ``msd``: a Medical Segmentation Decathlon task folder (``dataset.json``).

Example:
    >>> from s4mi.data.adapters import adapt
    >>> datalist = adapt("kvasir", "/data/Kvasir-SEG", out="/data/Kvasir-SEG/datalist.json")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "ADAPTERS",
    "CHESTXRAY14_CLASSES",
    "CHEXPERT_CLASSES",
    "CHEXPERT_POLICIES",
    "ISIC2018_CLASSES",
    "PRANET_TEST_SETS",
    "AdapterError",
    "adapt",
    "chestxray14",
    "chexpert",
    "isic2018_task3",
    "kvasir_seg",
    "msd",
    "pranet",
]

StrPath = str | os.PathLike[str]

SECTIONS: tuple[str, ...] = ("training", "unlabeled", "validation", "test")

CHESTXRAY14_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

CHEXPERT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

CHEXPERT_POLICIES: dict[str, int] = {"ones": 1, "zeros": 0, "ignore": -1}

ISIC2018_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

PRANET_TEST_SETS: tuple[str, ...] = ("Kvasir", "CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "CVC-300")

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


class AdapterError(ValueError):
    """A dataset on disk does not match the layout an adapter expects.

    The message names the file, folder, row or column at fault.
    """


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _empty_datalist(name: str, description: str, task: str, modality: str, classes: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "task": task,
        "modality": modality,
        "classes": classes,
        **{section: [] for section in SECTIONS},
    }


def _require_file(path: Path, what: str = "file") -> Path:
    if not path.is_file():
        raise AdapterError(f"expected {what} not found: {path}")
    return path


def _require_dir(path: Path, what: str = "folder") -> Path:
    if not path.is_dir():
        raise AdapterError(f"expected {what} not found: {path}")
    return path


def _read_csv(path: Path, required: list[str] | tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields ``(line_number, row)`` for each data row of a CSV file after checking its header.

    Args:
        path: CSV file; must exist.
        required: column names the header must contain.

    Raises:
        AdapterError: if the file is missing, empty, or lacks a required column.
    """
    _require_file(path, "CSV file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or []]
        if not header:
            raise AdapterError(f"{path}: empty CSV file (no header row)")
        missing = [name for name in required if name not in header]
        if missing:
            raise AdapterError(f"{path}: missing column(s) {missing}; header is {header}")
        reader.fieldnames = header
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            yield reader.line_num, {k: (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}


def _read_list(path: Path) -> list[str]:
    _require_file(path, "list file")
    with path.open(encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]


def _to_int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def _iter_paths(datalist: dict[str, Any]) -> Iterator[tuple[str, int, str]]:
    for section in SECTIONS:
        for index, item in enumerate(datalist.get(section, [])):
            for key in ("image", "label"):
                value = item.get(key)
                if isinstance(value, str):
                    yield section, index, value
                elif isinstance(value, list) and key == "image":
                    for sub in value:
                        if isinstance(sub, str):
                            yield section, index, sub


def _check_files(root: Path, datalist: dict[str, Any]) -> None:
    """Raises AdapterError naming the first referenced file that does not exist and how many are missing."""
    missing: list[tuple[str, int, str]] = [entry for entry in _iter_paths(datalist) if not (root / entry[2]).is_file()]
    if missing:
        section, index, rel = missing[0]
        raise AdapterError(
            f"{len(missing)} file(s) referenced by the datalist are missing under {root}; "
            f"first missing: {root / rel} ({section}[{index}])"
        )


def _list_images(folder: Path) -> dict[str, str]:
    """Maps file stem -> file name for the (non-hidden) image files directly inside ``folder``."""
    found: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(".") or Path(entry).suffix.lower() not in IMAGE_SUFFIXES or not (folder / entry).is_file():
            continue
        stem = Path(entry).stem
        if stem in found:
            raise AdapterError(f"{folder}: two image files share the stem {stem!r}: {found[stem]}, {entry}")
        found[stem] = entry
    return found


def _pair_folder(root: Path, image_dir: Path, mask_dir: Path) -> list[dict[str, Any]]:
    """Pairs images and masks of two folders by file stem, in sorted order."""
    images = _list_images(image_dir)
    masks = _list_images(mask_dir)
    orphan_masks = sorted(set(masks) - set(images))
    if orphan_masks:
        raise AdapterError(
            f"{len(orphan_masks)} mask(s) without an image in {image_dir}; first: {mask_dir / masks[orphan_masks[0]]}"
        )
    orphan_images = sorted(set(images) - set(masks))
    if orphan_images:
        raise AdapterError(
            f"{len(orphan_images)} image(s) without a mask in {mask_dir}; first: {image_dir / images[orphan_images[0]]}"
        )
    image_rel = image_dir.relative_to(root).as_posix()
    mask_rel = mask_dir.relative_to(root).as_posix()
    return [
        {"image": f"{image_rel}/{images[stem]}", "label": f"{mask_rel}/{masks[stem]}", "id": stem}
        for stem in sorted(images)
    ]


def _first_dir(parent: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (parent / name).is_dir():
            return parent / name
    raise AdapterError(f"expected folder not found: {parent / names[0]} (also tried {', '.join(names[1:])})")


# ---------------------------------------------------------------------------------------------------------------------
# NIH ChestX-ray14


def _index_files(root: Path, suffix: str) -> dict[str, str]:
    """Maps file name -> POSIX path relative to root for every ``suffix`` file below root (``images/`` first)."""
    index: dict[str, str] = {}
    preferred = root / "images"
    if preferred.is_dir():
        for entry in sorted(os.listdir(preferred)):
            if entry.lower().endswith(suffix):
                index[entry] = f"images/{entry}"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if Path(dirpath) == preferred:
            continue
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for entry in sorted(filenames):
            if entry.lower().endswith(suffix) and entry not in index:
                index[entry] = entry if rel_dir == "." else f"{rel_dir}/{entry}"
    return index


def chestxray14(root: StrPath, check_files: bool = True) -> dict[str, Any]:
    """Builds a multilabel datalist for NIH ChestX-ray14.

    Expected layout: ``root/Data_Entry_2017.csv``, ``root/train_val_list.txt``, ``root/test_list.txt`` and the PNG
    images either in ``root/images/`` (NIH Box release) or anywhere below root, e.g. ``root/images_001/images/``
    (Kaggle release); images are located by file name.

    Items follow the order of the list files: ``training`` = ``train_val_list.txt``, ``test`` = ``test_list.txt``.
    Each item is ``{"image", "label" (14 multi-hot ints), "id", "patient", "follow_up", "view"}``; "No Finding" is
    all zeros.

    Args:
        root: dataset root folder.
        check_files: verify that every image exists.

    Returns:
        The datalist dict.

    Raises:
        AdapterError: missing CSV or list file, unknown finding name (names the row), an image listed in a split file
            but absent from the CSV, or (with ``check_files``) a missing image.
    """
    root = Path(root)
    csv_path = root / "Data_Entry_2017.csv"
    class_index = {name: i for i, name in enumerate(CHESTXRAY14_CLASSES)}
    rows: dict[str, dict[str, Any]] = {}
    for line, row in _read_csv(csv_path, ("Image Index", "Finding Labels")):
        image_id = row["Image Index"]
        findings = [token.strip() for token in row["Finding Labels"].split("|")]
        label = [0] * len(CHESTXRAY14_CLASSES)
        if findings != ["No Finding"]:
            for finding in findings:
                if finding not in class_index:
                    raise AdapterError(
                        f"{csv_path}, line {line} ({image_id}): unknown finding {finding!r} in "
                        f"'Finding Labels' = {row['Finding Labels']!r}; expected 'No Finding' or "
                        f"'|'-joined names from {list(CHESTXRAY14_CLASSES)}"
                    )
                label[class_index[finding]] = 1
        if image_id in rows:
            raise AdapterError(f"{csv_path}, line {line}: duplicate 'Image Index' {image_id!r}")
        meta: dict[str, Any] = {"id": image_id}
        for column, key in (("Patient ID", "patient"), ("Follow-up #", "follow_up"), ("View Position", "view")):
            if row.get(column):
                meta[key] = _to_int(row[column]) if key != "view" else row[column]
        rows[image_id] = {"label": label, **meta}

    train_list = _read_list(root / "train_val_list.txt")
    test_list = _read_list(root / "test_list.txt")
    index = _index_files(root, ".png")
    datalist = _empty_datalist(
        "ChestX-ray14",
        "NIH ChestX-ray14: 14 thoracic findings mined from radiology reports; official train_val / test split.",
        "multilabel",
        "X-ray",
        list(CHESTXRAY14_CLASSES),
    )
    for section, list_name, names in (
        ("training", "train_val_list.txt", train_list),
        ("test", "test_list.txt", test_list),
    ):
        for image_id in names:
            if image_id not in rows:
                raise AdapterError(f"{root / list_name}: image {image_id!r} has no row in {csv_path}")
            entry = rows[image_id]
            datalist[section].append({"image": index.get(image_id, f"images/{image_id}"), **entry})
    if check_files:
        _check_files(root, datalist)
    return datalist


# ---------------------------------------------------------------------------------------------------------------------
# CheXpert


def _chexpert_rel(path: str, strip_prefix: str | None) -> str:
    rel = path.replace("\\", "/").lstrip("/")
    parts = PurePosixPath(rel).parts
    if strip_prefix is not None and parts and parts[0] == strip_prefix:
        rel = PurePosixPath(*parts[1:]).as_posix()
    return rel


def _chexpert_prefix(first_path: str | None, root: Path) -> str | None:
    """The leading folder to drop from CSV paths: root's own name, or a renamed ``CheXpert-v1.0*`` folder."""
    if first_path is None:
        return None
    parts = PurePosixPath(first_path.replace("\\", "/").lstrip("/")).parts
    if not parts:
        return None
    head = parts[0]
    if head == root.name:
        return head
    if head.startswith("CheXpert-v1.0") and not (root / head).is_dir():
        return head
    return None


def chexpert(
    root: StrPath, policy: str = "ones", frontal_only: bool = False, check_files: bool = True
) -> dict[str, Any]:
    """Builds a multilabel datalist for CheXpert-v1.0 (full or ``-small``).

    Expected layout: ``root/train.csv`` and ``root/valid.csv`` whose ``Path`` column holds paths such as
    ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``. A path whose first component is root's
    folder name (or a ``CheXpert-v1.0*`` folder absent from root, i.e. root was renamed) is resolved against root's
    parent, any other path against root; the datalist stores it relative to root.

    Observation values: ``1.0`` positive, ``0.0`` negative, blank (not mentioned) negative, ``-1.0`` uncertain,
    mapped by ``policy``: ``"ones"`` (U-Ones, -> 1), ``"zeros"`` (U-Zeros, -> 0) or ``"ignore"`` (U-Ignore, stays -1
    and is masked out of the loss). ``training`` = train.csv and ``validation`` = valid.csv, in file order. Items carry
    ``id`` (the path as written in the CSV), ``patient``, ``study``, ``sex``, ``age``, ``view`` (Frontal/Lateral) and
    ``projection`` (AP/PA) when available.

    Args:
        root: the ``CheXpert-v1.0`` or ``CheXpert-v1.0-small`` folder.
        policy: uncertainty policy, one of ``"ones"``, ``"zeros"``, ``"ignore"``.
        frontal_only: keep only frontal views (``Frontal/Lateral == "Frontal"``).
        check_files: verify that every image exists.

    Returns:
        The datalist dict.

    Raises:
        ValueError: unknown policy.
        AdapterError: missing CSV, missing column, a value other than 1, 0, -1 or blank (names row and column), or
            (with ``check_files``) a missing image.
    """
    if policy not in CHEXPERT_POLICIES:
        raise ValueError(f"unknown CheXpert uncertainty policy {policy!r}; expected one of {list(CHEXPERT_POLICIES)}")
    uncertain_value = CHEXPERT_POLICIES[policy]
    root = Path(root)
    required = ["Path", *CHEXPERT_CLASSES] + (["Frontal/Lateral"] if frontal_only else [])
    datalist = _empty_datalist(
        "CheXpert",
        f"CheXpert-v1.0: 14 chest radiograph observations; uncertainty policy U-{policy.capitalize()}"
        + (", frontal views only." if frontal_only else "."),
        "multilabel",
        "X-ray",
        list(CHEXPERT_CLASSES),
    )
    for section, csv_name in (("training", "train.csv"), ("validation", "valid.csv")):
        csv_path = root / csv_name
        rows = list(_read_csv(csv_path, required))
        prefix = _chexpert_prefix(rows[0][1]["Path"] if rows else None, root)
        for line, row in rows:
            if frontal_only and row["Frontal/Lateral"] != "Frontal":
                continue
            if not row["Path"]:
                raise AdapterError(f"{csv_path}, line {line}: empty 'Path'")
            label: list[int] = []
            for name in CHEXPERT_CLASSES:
                raw = row[name]
                try:
                    value = float(raw) if raw else 0.0
                except ValueError:
                    value = float("nan")
                if value not in (1.0, 0.0, -1.0):
                    raise AdapterError(
                        f"{csv_path}, line {line} ({row['Path']}): column {name!r} has value {raw!r}; "
                        "expected 1.0, 0.0, -1.0 or blank"
                    )
                label.append(uncertain_value if value == -1.0 else int(value))
            item: dict[str, Any] = {"image": _chexpert_rel(row["Path"], prefix), "label": label, "id": row["Path"]}
            for part in PurePosixPath(row["Path"].replace("\\", "/")).parts:
                if re.fullmatch(r"patient\d+", part):
                    item["patient"] = part
                elif re.fullmatch(r"study\d+", part):
                    item["study"] = part
            for column, key in (("Sex", "sex"), ("Age", "age"), ("Frontal/Lateral", "view"), ("AP/PA", "projection")):
                if row.get(column):
                    item[key] = _to_int(row[column]) if key == "age" else row[column]
            datalist[section].append(item)
    if check_files:
        _check_files(root, datalist)
    return datalist


# ---------------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 3


def _isic_split(root: Path, split: str) -> list[dict[str, Any]]:
    input_dir = _require_dir(root / f"ISIC2018_Task3_{split}_Input", "image folder")
    csv_path = root / f"ISIC2018_Task3_{split}_GroundTruth" / f"ISIC2018_Task3_{split}_GroundTruth.csv"
    items: dict[str, dict[str, Any]] = {}
    for line, row in _read_csv(csv_path, ("image", *ISIC2018_CLASSES)):
        image_id = row["image"]
        try:
            values = [float(row[name]) for name in ISIC2018_CLASSES]
        except ValueError:
            values = []
        if not values or any(v not in (0.0, 1.0) for v in values) or sum(values) != 1.0:
            shown = ",".join(row[name] for name in ISIC2018_CLASSES)
            raise AdapterError(
                f"{csv_path}, line {line} ({image_id}): label row {shown!r} is not one-hot over {list(ISIC2018_CLASSES)}"
            )
        if image_id in items:
            raise AdapterError(f"{csv_path}, line {line}: duplicate image {image_id!r}")
        items[image_id] = {
            "image": f"{input_dir.name}/{image_id}.jpg",
            "label": [int(v) for v in values],
            "id": image_id,
        }
    return [items[image_id] for image_id in sorted(items)]


def isic2018_task3(root: StrPath, check_files: bool = True) -> dict[str, Any]:
    """Builds a multiclass datalist for ISIC 2018 Task 3 (HAM10000, 7 lesion classes).

    Expected layout: ``root/ISIC2018_Task3_Training_Input/<image>.jpg`` and
    ``root/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv`` (columns
    ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``, one-hot ``1.0``/``0.0``). The ``Validation`` and ``Test`` pairs
    (``ISIC2018_Task3_Validation_Input`` + ``..._GroundTruth``, likewise ``Test``) are used for ``validation`` and
    ``test`` when both halves are present; a lone half is skipped with a warning. Items are in image-id order.

    Args:
        root: dataset root folder.
        check_files: verify that every image exists.

    Returns:
        The datalist dict.

    Raises:
        AdapterError: missing training folder or CSV, missing column, a row that is not one-hot (names the row), or
            (with ``check_files``) a missing image.
    """
    root = Path(root)
    datalist = _empty_datalist(
        "ISIC2018-Task3",
        "ISIC 2018 Task 3 / HAM10000: dermoscopic lesion diagnosis, 7 classes.",
        "multiclass",
        "dermoscopy",
        list(ISIC2018_CLASSES),
    )
    datalist["training"] = _isic_split(root, "Training")
    for split, section in (("Validation", "validation"), ("Test", "test")):
        input_dir = root / f"ISIC2018_Task3_{split}_Input"
        truth_dir = root / f"ISIC2018_Task3_{split}_GroundTruth"
        if input_dir.is_dir() and truth_dir.is_dir():
            datalist[section] = _isic_split(root, split)
        elif input_dir.is_dir() or truth_dir.is_dir():
            present, absent = (input_dir, truth_dir) if input_dir.is_dir() else (truth_dir, input_dir)
            warnings.warn(
                f"ISIC 2018: {present} found but {absent} is missing; skipping the {split} split", stacklevel=2
            )
    if check_files:
        _check_files(root, datalist)
    return datalist


# ---------------------------------------------------------------------------------------------------------------------
# Polyp segmentation: Kvasir-SEG and PraNet


def kvasir_seg(root: StrPath, check_files: bool = True) -> dict[str, Any]:
    """Builds a binary segmentation datalist for Kvasir-SEG.

    Expected layout: ``root/images/*.jpg`` and ``root/masks/*.jpg`` with the same file names (paired by file stem,
    so a ``.png`` mask also matches). All pairs go to ``training`` in file-name order.

    Args:
        root: the ``Kvasir-SEG`` folder.
        check_files: verify that every referenced file exists.

    Returns:
        The datalist dict.

    Raises:
        AdapterError: missing ``images``/``masks`` folder, or a mask without an image / image without a mask (names
            the file).
    """
    root = Path(root)
    image_dir = _require_dir(root / "images", "image folder")
    mask_dir = _require_dir(root / "masks", "mask folder")
    datalist = _empty_datalist(
        "Kvasir-SEG",
        "Kvasir-SEG: colonoscopy polyp segmentation.",
        "segmentation",
        "endoscopy",
        ["background", "polyp"],
    )
    datalist["training"] = _pair_folder(root, image_dir, mask_dir)
    if check_files:
        _check_files(root, datalist)
    return datalist


def pranet(root: StrPath, check_files: bool = True) -> dict[str, Any]:
    """Builds a binary segmentation datalist for the PraNet polyp benchmark.

    Expected layout: ``root/TrainDataset/image/*.png`` + ``root/TrainDataset/mask/*.png`` (the Kvasir + CVC-ClinicDB
    training pool; ``images``/``masks`` are accepted too) -> ``training``, and
    ``root/TestDataset/<Set>/images/*.png`` + ``root/TestDataset/<Set>/masks/*.png`` -> ``test`` with
    ``"source": <Set>``. Test sets present are used in the order Kvasir, CVC-ClinicDB, CVC-ColonDB, ETIS-LaribPolypDB,
    CVC-300, then any other set folders alphabetically; ``TestDataset`` itself is optional. Items within a folder are
    in file-name order.

    Args:
        root: folder holding ``TrainDataset`` and ``TestDataset``.
        check_files: verify that every referenced file exists.

    Returns:
        The datalist dict.

    Raises:
        AdapterError: missing ``TrainDataset`` or image/mask folder, or an unpaired image or mask (names the file).
    """
    root = Path(root)
    train_dir = _require_dir(root / "TrainDataset", "training folder")
    datalist = _empty_datalist(
        "PraNet-Polyp",
        "PraNet polyp benchmark: Kvasir + CVC-ClinicDB training pool; Kvasir, CVC-ClinicDB, CVC-ColonDB, "
        "ETIS-LaribPolypDB and CVC-300 test sets.",
        "segmentation",
        "endoscopy",
        ["background", "polyp"],
    )
    datalist["training"] = _pair_folder(
        root, _first_dir(train_dir, ("image", "images")), _first_dir(train_dir, ("mask", "masks"))
    )
    test_dir = root / "TestDataset"
    if test_dir.is_dir():
        present = sorted(d.name for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        order = [s for s in PRANET_TEST_SETS if s in present] + [s for s in present if s not in PRANET_TEST_SETS]
        for set_name in order:
            set_dir = test_dir / set_name
            pairs = _pair_folder(root, _first_dir(set_dir, ("images", "image")), _first_dir(set_dir, ("masks", "mask")))
            datalist["test"].extend({**item, "source": set_name} for item in pairs)
    if check_files:
        _check_files(root, datalist)
    return datalist


# ---------------------------------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon


def _msd_rel(path: Any, root: Path, where: str, json_path: Path) -> str:
    if not isinstance(path, str) or not path.strip():
        raise AdapterError(f"{json_path}: {where} is not a path string: {path!r}")
    rel = path.strip().replace("\\", "/")
    if posixpath.isabs(rel):
        try:
            rel = Path(rel).relative_to(root).as_posix()
        except ValueError:
            raise AdapterError(f"{json_path}: {where} is an absolute path outside {root}: {path!r}") from None
    rel = posixpath.normpath(rel)
    if rel == "." or rel == ".." or rel.startswith("../"):
        raise AdapterError(f"{json_path}: {where} points outside the dataset root: {path!r}")
    return rel


def _msd_id(rel: str) -> str:
    name = PurePosixPath(rel).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _msd_indexed(mapping: Any, key: str, json_path: Path) -> list[str]:
    if not isinstance(mapping, dict) or not mapping:
        raise AdapterError(f'{json_path}: {key!r} must be a non-empty object such as {{"0": "background"}}')
    try:
        keys = sorted(mapping, key=int)
    except ValueError:
        raise AdapterError(f"{json_path}: {key!r} keys must be integers, got {list(mapping)}") from None
    if [int(k) for k in keys] != list(range(len(keys))):
        raise AdapterError(f"{json_path}: {key!r} keys must be 0..{len(keys) - 1}, got {list(mapping)}")
    return [str(mapping[k]) for k in keys]


def msd(root: StrPath, check_files: bool = True) -> dict[str, Any]:
    """Builds a segmentation datalist from a Medical Segmentation Decathlon task folder.

    Expected layout: ``root/dataset.json`` with ``"training": [{"image": "./imagesTr/x.nii.gz", "label":
    "./labelsTr/x.nii.gz"}, ...]``, ``"test": ["./imagesTs/y.nii.gz", ...]``, ``"labels": {"0": "background", ...}``,
    ``"modality": {"0": "CT"}`` and ``"name"``. Classes come from ``labels`` in key order; ``modality`` becomes a
    string (several channels joined with ``+``); paths lose their ``./`` prefix; an optional ``validation`` list is
    kept. Items keep dataset.json order and gain an ``id`` (file name without extension). Paths are passed through
    (4D images are not inspected).

    Args:
        root: the task folder, e.g. ``Task09_Spleen``.
        check_files: verify that every referenced file exists.

    Returns:
        The datalist dict.

    Raises:
        AdapterError: missing or invalid dataset.json, missing ``training``/``labels``, an item without image or
            label, or (with ``check_files``) a missing file.
    """
    root = Path(root)
    json_path = _require_file(root / "dataset.json", "dataset.json")
    try:
        spec = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{json_path}: invalid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise AdapterError(f"{json_path}: top level must be a JSON object")
    for key in ("training", "labels"):
        if key not in spec:
            raise AdapterError(f"{json_path}: missing key {key!r}")
    classes = _msd_indexed(spec["labels"], "labels", json_path)
    modality = spec.get("modality", "")
    if isinstance(modality, dict):
        modality = "+".join(_msd_indexed(modality, "modality", json_path))
    datalist = _empty_datalist(
        str(spec.get("name", root.name)),
        str(spec.get("description", "")),
        "segmentation",
        str(modality),
        classes,
    )
    for section in ("training", "validation"):
        entries = spec.get(section, [])
        if not isinstance(entries, list):
            raise AdapterError(f"{json_path}: {section!r} must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise AdapterError(f"{json_path}: {section}[{i}] must be an object with 'image' and 'label'")
            image = _msd_rel(entry["image"], root, f"{section}[{i}].image", json_path)
            label = _msd_rel(entry["label"], root, f"{section}[{i}].label", json_path)
            datalist[section].append({"image": image, "label": label, "id": _msd_id(image)})
    test_entries = spec.get("test", [])
    if not isinstance(test_entries, list):
        raise AdapterError(f"{json_path}: 'test' must be a list")
    for i, entry in enumerate(test_entries):
        raw = entry.get("image") if isinstance(entry, dict) else entry
        image = _msd_rel(raw, root, f"test[{i}]", json_path)
        datalist["test"].append({"image": image, "id": _msd_id(image)})
    if check_files:
        _check_files(root, datalist)
    return datalist


# ---------------------------------------------------------------------------------------------------------------------
# registry


ADAPTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "chestxray14": chestxray14,
    "chexpert": chexpert,
    "isic2018": isic2018_task3,
    "kvasir": kvasir_seg,
    "pranet": pranet,
    "msd": msd,
}


def _write_json_atomic(data: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def adapt(name: str, root: StrPath, out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Runs the adapter ``name`` on ``root`` and optionally writes the datalist as JSON.

    Args:
        name: a key of :data:`ADAPTERS`.
        root: dataset root folder.
        out: if given, the datalist is written there atomically (temporary file + ``os.replace``), 4-space indent,
            trailing newline.
        **kwargs: passed to the adapter (e.g. ``policy`` for CheXpert, ``check_files``).

    Returns:
        The datalist dict.

    Raises:
        ValueError: unknown adapter name (lists the valid names).
        AdapterError: raised by the adapter.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset adapter {name!r}; valid names: {', '.join(sorted(ADAPTERS))}")
    datalist = ADAPTERS[name](root, **kwargs)
    if out is not None:
        _write_json_atomic(datalist, Path(out))
    return datalist
