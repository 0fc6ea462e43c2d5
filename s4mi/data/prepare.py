"""One entry point for bundles: a user's datalist, or the embedded phantom data, split to a label fraction."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .datalist import load_datalist, save_datalist
from .phantoms import make_phantom
from .split import label_fraction_split

__all__ = ["cache_dir", "phantom_datalist", "prepare_datalist", "with_index"]


def cache_dir() -> Path:
    """Where phantom data is made on first use: ``$S4MI_CACHE`` or ``~/.cache/s4mi``."""
    return Path(os.environ.get("S4MI_CACHE") or Path.home() / ".cache" / "s4mi")


def phantom_datalist(
    name: str, n: int = 1000, seed: int = 0, image_size: int | None = None, out_dir: str | os.PathLike | None = None
) -> Path:
    """Return the datalist of phantom ``name``, making it first if ``out_dir`` holds none.

    The data is written to a temporary sibling folder and renamed into place, so a killed or concurrent run
    never sees half a dataset.
    """
    size_tag = f"-{image_size}px" if image_size else ""
    target = Path(out_dir) if out_dir else cache_dir() / "phantoms" / f"{name}-n{n}-seed{seed}{size_tag}"
    datalist = target / "datalist.json"
    if datalist.is_file():
        return datalist
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make_phantom(name, tmp, n=n, seed=seed, image_size=image_size)
        if target.exists() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.replace(tmp, target)
        except OSError:
            if not datalist.is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datalist


def prepare_datalist(
    dataset_dir: str | os.PathLike | None = "",
    datalist: str | os.PathLike | dict | None = "",
    phantom: str = "cxr",
    label_fraction: float = 1.0,
    seed: int = 0,
    phantom_n: int = 1000,
    phantom_size: int | None = None,
    split_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Resolve, validate and split the data a bundle trains on.

    Args:
        dataset_dir: root that datalist paths are relative to. With no ``datalist`` it is where the phantom
            data lives (made there if missing); empty means s4mi's cache folder.
        datalist: a datalist JSON path or dict; empty means the embedded phantom ``phantom``.
        phantom: phantom name used when ``datalist`` is empty (``cxr``, ``skin``, ``polyp``, ``ct3d``).
        label_fraction: share of ``training`` kept labelled; the rest moves to ``unlabeled`` (seeded split).
        seed: seed of the split. The phantom itself is always made with seed 0, so every run sees one dataset.
        phantom_n: number of phantom images to make.
        phantom_size: phantom image size (None: the generator's default).
        split_file: where to save the split actually used (for reproducibility), if given.

    Returns:
        the datalist with absolute paths, validated.
    """
    if not datalist:
        datalist = phantom_datalist(phantom, n=phantom_n, seed=0, image_size=phantom_size, out_dir=dataset_dir or None)
        dataset_dir = Path(datalist).parent
    data = load_datalist(
        datalist if isinstance(datalist, dict) else Path(datalist),
        dataset_dir=Path(dataset_dir) if dataset_dir else None,
    )
    if label_fraction < 1.0:
        data = label_fraction_split(data, label_fraction, seed=seed)
    if split_file:
        save_datalist(data, Path(split_file))
    return data


IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.dcm", "*.nii", "*.nii.gz", "*.mha", "*.nrrd")


def inference_items(
    input_dir: str | os.PathLike | None = "",
    dataset_dir: str | os.PathLike | None = "",
    datalist: str | os.PathLike | dict | None = "",
    phantom: str = "cxr",
    phantom_n: int = 1000,
    section: str = "test",
) -> list[dict[str, str]]:
    """Images to run inference on: every image file in ``input_dir`` (sorted), else ``section`` of the datalist.

    Items hold only ``image``, so inference never needs labels.

    Raises:
        FileNotFoundError: ``input_dir`` is given but holds no image file.
    """
    if input_dir:
        folder = Path(input_dir)
        files = sorted({str(f) for p in IMAGE_PATTERNS for f in folder.glob(p)})
        if not files:
            raise FileNotFoundError(f"input_dir {folder} holds no image ({', '.join(IMAGE_PATTERNS)})")
        return [{"image": f} for f in files]
    data = prepare_datalist(dataset_dir, datalist, phantom, phantom_n=phantom_n)
    return [{"image": item["image"]} for item in data.get(section, [])]


def with_index(items: list[dict[str, Any]] | None, key: str = "ulb_index") -> list[dict[str, Any]]:
    """Copies of ``items`` that carry their position in the list under ``key`` (the unlabelled item index).

    Pseudo labels rendered over the whole unlabelled set are served to the student by this index
    (:class:`s4mi.handlers.PseudoLabelRenderer`). ``None`` (a datalist with no unlabelled section) gives ``[]``.

    Raises:
        KeyError: an item already holds ``key``.
    """
    out = []
    for i, item in enumerate(items or []):
        if key in item:
            raise KeyError(f"unlabelled item {i} ({item.get('image')}) already holds {key!r}")
        out.append({**item, key: i})
    return out
