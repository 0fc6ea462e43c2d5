"""One entry point for bundles: a user's datalist, or the embedded phantom data, split to a label fraction."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s4mi.keys import ULB_INDEX

from .datalist import SECTIONS, load_datalist, save_datalist
from .phantoms import make_phantom
from .split import label_fraction_split, recorded_split

__all__ = [
    "SPLIT_ORIGIN",
    "cache_dir",
    "inference_items",
    "phantom_datalist",
    "prepare_datalist",
    "select_classes",
    "with_index",
]

logger = logging.getLogger(__name__)


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


SPLIT_ORIGIN = "split_origin"
"""Top-level key of a run's saved split file that records what produced the split (see :func:`prepare_datalist`)."""

_FRACTION_TOLERANCE = 1e-6


def _fmt(fraction: float) -> str:
    return repr(float(fraction))


def _same_fraction(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=_FRACTION_TOLERANCE, abs_tol=_FRACTION_TOLERANCE)


def _check_label_fraction(label_fraction: float) -> None:
    if isinstance(label_fraction, bool) or not isinstance(label_fraction, (int, float)):
        raise ValueError(f"label_fraction must be a number in (0, 1], got {label_fraction!r}")
    if not 0.0 < label_fraction <= 1.0:  # also catches NaN
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")


def _describe_split(split: Mapping[str, Any]) -> str:
    parts = [f"seed {split.get('seed')}"]
    if split.get("protocol"):
        parts.append(f"protocol {split['protocol']}")
    if "n_labeled" in split and "n_unlabeled" in split:
        parts.append(f"{split['n_labeled']} labelled and {split['n_unlabeled']} unlabelled items")
    return ", ".join(parts)


def _mismatch_message(source: str, split: Mapping[str, Any], label_fraction: float) -> str:
    recorded = _fmt(split["fraction"])
    return (
        f"{source} records a split at label fraction {recorded} ({_describe_split(split)}), but label_fraction is "
        f"{_fmt(label_fraction)}. label_fraction is the share of the original training set, and a datalist that "
        f"records its split is used as it is, never split again: pass --label_fraction {recorded} to train on this "
        f"split, or pass the unsplit datalist to split it at {_fmt(label_fraction)}."
    )


def _source(
    dataset_dir: str | os.PathLike | None,
    datalist: str | os.PathLike | Mapping[str, Any] | None,
    phantom: str,
    phantom_n: int,
    phantom_size: int | None,
) -> tuple[str | Path | Mapping[str, Any], Path | None, str, str]:
    """Where this run's data comes from.

    Returns:
        ``(datalist, dataset_dir, description, sha256)``: the datalist to load (a file path or a dict), the folder
        its paths are relative to (``None``: the file's folder), a description of the source for split records and
        messages (the resolved datalist path and ``dataset_dir``, or the phantom's name and size), and the SHA-256
        of the datalist's content.
    """
    if not datalist:
        path = phantom_datalist(phantom, n=phantom_n, seed=0, image_size=phantom_size, out_dir=dataset_dir or None)
        size = f", image_size={phantom_size}" if phantom_size else ""
        return path, path.parent, f"phantom {phantom} (n={phantom_n}{size})", _sha256(path.read_bytes())
    base = Path(os.path.abspath(Path(dataset_dir).expanduser())) if dataset_dir else None
    under = f" (dataset_dir {base})" if base is not None else ""
    if isinstance(datalist, Mapping):
        text = json.dumps(datalist, sort_keys=True, ensure_ascii=False, default=str)
        return datalist, base, f"datalist <dict>{under}", _sha256(text.encode())
    path = Path(datalist).expanduser().resolve()
    try:
        digest = _sha256(path.read_bytes())
    except OSError:
        digest = ""  # load_datalist reports the unreadable file
    return path, base, f"datalist {path}{under}", digest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _describe_origin(origin: Mapping[str, Any]) -> str:
    digest = str(origin.get("sha256") or "")[:12]
    label_fraction = origin.get("label_fraction")
    shown = _fmt(label_fraction) if isinstance(label_fraction, (int, float)) else repr(label_fraction)
    return (
        f"{origin.get('source')} (content sha256 {digest or '?'}...), label_fraction {shown}, seed {origin.get('seed')}"
    )


def _origin_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    differ = [key for key in ("source", "sha256", "seed") if saved.get(key) != wanted.get(key)]
    if saved.get("split_strategy", "auto") != wanted.get("split_strategy", "auto"):
        differ.append("split_strategy")
    fraction = saved.get("label_fraction")
    if not (isinstance(fraction, (int, float)) and _same_fraction(fraction, wanted["label_fraction"])):
        differ.append("label_fraction")
    return differ


def _reuse_split(split_file: Path, origin: Mapping[str, Any]) -> dict[str, Any]:
    """Load a run's saved split file after checking that it records ``origin``.

    Raises:
        ValueError: the file records no origin or another one.
        DatalistError: the file is not a valid datalist or points at missing files.
    """
    data = load_datalist(split_file)
    saved = data.pop(SPLIT_ORIGIN, None)
    how = (
        "The split is made once per output_dir and reused by every later stage of the run (pretrain.json, "
        "train.json, evaluate.json); pass another --output_dir for this run, or delete "
        f"{split_file} to split the data again."
    )
    if not isinstance(saved, Mapping):
        raise ValueError(
            f"split file {split_file} exists but records no '{SPLIT_ORIGIN}' (it was written by an older s4mi or is "
            f"not a split file), so it cannot be checked against this run, which asks for {_describe_origin(origin)}. "
            + how
        )
    differ = _origin_differences(saved, origin)
    if differ:
        raise ValueError(
            f"split file {split_file} belongs to another run: it records {_describe_origin(saved)}, but this run "
            f"asks for {_describe_origin(origin)} (they differ in {', '.join(differ)}). " + how
        )
    logger.info("reusing the split saved in %s (%s)", split_file, _describe_origin(saved))
    return data


def _save_split(data: Mapping[str, Any], origin: Mapping[str, Any], split_file: Path) -> None:
    """Write ``data`` with its ``origin`` record to ``split_file`` atomically (a temporary file, then os.replace)."""
    out: dict[str, Any] = {k: v for k, v in data.items() if k not in SECTIONS}
    out[SPLIT_ORIGIN] = dict(origin)
    out.update({k: v for k, v in data.items() if k in SECTIONS})
    save_datalist(out, split_file)


def prepare_datalist(
    dataset_dir: str | os.PathLike | None = "",
    datalist: str | os.PathLike | dict | None = "",
    phantom: str = "cxr",
    label_fraction: float | None = 1.0,
    seed: int = 0,
    phantom_n: int = 1000,
    phantom_size: int | None = None,
    split_file: str | os.PathLike | None = None,
    split_strategy: str = "auto",
) -> dict[str, Any]:
    """Resolve, validate and split (once) the data a bundle trains on.

    ``label_fraction`` is always the share of the original training set that stays labelled. A datalist that
    records its split (a top-level ``"split"`` with a ``"fraction"``, as ``s4mi split``, :func:`label_fraction_split`
    and the paper protocols write) is used as it is, never split again, and its recorded fraction must equal
    ``label_fraction``. Otherwise the training section is split at ``label_fraction`` with ``seed``.

    With ``split_file`` (a bundle's ``output_dir/split.json``), the split is made once per run: when the file exists
    (an earlier stage of the same run wrote it: pretrain.json before train.json, or train.json before evaluate.json)
    it is loaded instead of splitting again, after checking that its ``"split_origin"`` record (the source, the
    SHA-256 of the datalist's content, ``label_fraction`` and ``seed``) matches this call; when it does not exist,
    the datalist used is written there atomically with that record (also at fraction 1.0, no split).

    Args:
        dataset_dir: root that datalist paths are relative to. With no ``datalist`` it is where the phantom
            data lives (made there if missing); empty means s4mi's cache folder.
        datalist: a datalist JSON path or dict; empty means the embedded phantom ``phantom``.
        phantom: phantom name used when ``datalist`` is empty (``cxr``, ``skin``, ``polyp``, ``ct3d``).
        label_fraction: share of the original ``training`` set kept labelled, in (0, 1]; the rest moves to
            ``unlabeled`` (seeded split). ``None`` takes the datalist as it is, whatever split it records (for
            inference, which reads no labels).
        seed: seed of the split (a datalist that records its split keeps the split of its own seed). The phantom
            itself is always made with seed 0, so every run sees one dataset.
        phantom_n: number of phantom images to make.
        phantom_size: phantom image size (None: the generator's default).
        split_file: where to save the split actually used, and to reuse it from in later stages of the run.
        split_strategy: how the labelled share is drawn (:func:`~s4mi.data.split.label_fraction_split`): ``"auto"``
            (by task), ``"first"`` (the first N items in file order: the S4MI segmentation protocol), ``"random"``
            (seeded), ...; recorded in the split file's origin.

    Returns:
        the datalist with absolute paths, validated (without the ``"split_origin"`` record).

    Raises:
        ValueError: ``label_fraction`` is not in (0, 1]; the datalist records a split at another fraction (the
            message names both fractions, the datalist and what to pass); or ``split_file`` exists but was written
            for another source, fraction or seed, or records no origin (the message names the file, what it
            records, what this call asks and how to proceed).
        DatalistError: the datalist (or the saved split file) is malformed or points at missing files.
    """
    if label_fraction is not None:
        _check_label_fraction(label_fraction)
    source, base, description, digest = _source(dataset_dir, datalist, phantom, phantom_n, phantom_size)
    recorded: dict[str, Any] | None = None
    if label_fraction is None or split_file:
        raw = source if isinstance(source, Mapping) else _peek(Path(source))
        recorded = recorded_split(raw) if raw is not None else None
    if label_fraction is None:
        label_fraction = float(recorded["fraction"]) if recorded is not None else 1.0
    origin = {"source": description, "sha256": digest, "label_fraction": label_fraction, "seed": seed}
    if split_strategy != "auto":  # recorded only when chosen, so split files written before it still match
        origin["split_strategy"] = split_strategy
    if split_file and Path(split_file).is_file():
        if recorded is not None and not _same_fraction(recorded["fraction"], label_fraction):
            raise ValueError(_mismatch_message(_source_name(source), recorded, label_fraction))
        return _reuse_split(Path(split_file), origin)

    data = load_datalist(source if isinstance(source, Mapping) else Path(source), dataset_dir=base)
    data.pop(SPLIT_ORIGIN, None)  # a run's saved split given as the datalist: its record is rewritten below
    recorded = recorded_split(data)
    if recorded is not None:
        if not _same_fraction(recorded["fraction"], label_fraction):
            raise ValueError(_mismatch_message(_source_name(source), recorded, label_fraction))
        logger.info(
            "%s records its split (label fraction %s, %s): used as it is",
            _source_name(source),
            _fmt(recorded["fraction"]),
            _describe_split(recorded),
        )
    elif label_fraction < 1.0:
        data = label_fraction_split(data, label_fraction, seed=seed, strategy=split_strategy)
    if split_file:
        _save_split(data, origin, Path(split_file))
    return data


def select_classes(data: Mapping[str, Any], classes: list[int] | None) -> dict[str, Any]:
    """The datalist with each classification label vector cut to the classes at ``classes`` (in that order): one
    finding of a multi-label datalist as a binary task (``[5]``: the chest phantom's consolidation), or a subset.
    ``None`` returns the datalist unchanged. Items without a label (unlabelled ones) pass as they are.

    Raises:
        ValueError: ``classes`` is empty or repeats a class; an index is out of range for an item's label vector, or
            an item's label is not a vector (a mask or a label file: the message names the item).
    """
    if classes is None:
        return dict(data)
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must name each kept class once, got {classes}")
    out: dict[str, Any] = {}
    for section, items in data.items():
        if not isinstance(items, list):
            out[section] = items
            continue
        kept = []
        for item in items:
            label = item.get("label") if isinstance(item, Mapping) else None
            if label is None:
                kept.append(item)
                continue
            if not isinstance(label, (list, tuple)):
                raise ValueError(
                    f"classes {classes}: {section} item {item.get('image')!r} has the label {label!r}, not a class "
                    "vector; classes selects classes of vector labels written in the datalist"
                )
            bad = [c for c in classes if not -len(label) <= c < len(label)]
            if bad:
                raise ValueError(
                    f"classes {classes}: {section} item {item.get('image')!r} has {len(label)} classes, no class {bad}"
                )
            kept.append({**item, "label": [label[c] for c in classes]})
        out[section] = kept
    return out


def _source_name(source: str | Path | Mapping[str, Any]) -> str:
    return "the datalist <dict>" if isinstance(source, Mapping) else f"datalist {source}"


def _peek(path: Path) -> dict[str, Any] | None:
    """The top level of a datalist file, or ``None`` when it cannot be read (load_datalist reports why)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    data = prepare_datalist(dataset_dir, datalist, phantom, label_fraction=None, phantom_n=phantom_n)
    return [{"image": item["image"]} for item in data.get(section, [])]


def with_index(items: list[dict[str, Any]] | None, key: str = ULB_INDEX) -> list[dict[str, Any]]:
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
