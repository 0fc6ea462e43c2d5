"""Decathlon-style datalists: loading, validation, path resolution and deterministic saving.

A datalist is a JSON object with optional metadata (``"name"``, ``"task"``, ``"classes"``, ...) and up to four
sections of items: ``"training"`` (labelled), ``"unlabeled"``, ``"validation"`` and ``"test"``. An item is a dict with
an ``"image"`` (a path, a list of paths forming one DICOM series, or a DICOM series folder) and, in labelled sections,
label keys (:data:`LABEL_KEYS`): ``"label"`` is a multi-hot / one-hot list of ints (classification) or a mask path
(segmentation); ``"mask"`` and ``"seg"`` are paths. Classification labels may also be given as a list of class names,
which :func:`load_datalist` converts to multi-hot vectors using the top-level ``"classes"``.

Example::

    {
        "task": "multilabel",
        "classes": ["nodule", "mass"],
        "training": [{"image": "img/0001.png", "label": [0, 1]}, {"image": "img/0002.png", "label": ["nodule"]}],
        "unlabeled": [{"image": "img/0003.png"}]
    }
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from s4mi.keys import LABEL_KEYS

__all__ = [
    "LABEL_KEYS",
    "PATH_KEYS",
    "SECTIONS",
    "LABELLED_SECTIONS",
    "TASKS",
    "UNKNOWN_LABEL",
    "DatalistError",
    "load_datalist",
    "validate_datalist",
    "save_datalist",
    "relativize",
    "infer_task",
    "label_to_vector",
    "strip_labels",
]


PATH_KEYS: tuple[str, ...] = ("image",) + LABEL_KEYS
"""Item keys whose string values are file paths (``"label"`` only when it is a string)."""

SECTIONS: tuple[str, ...] = ("training", "unlabeled", "validation", "test")
LABELLED_SECTIONS: tuple[str, ...] = ("training", "validation", "test")
TASKS: tuple[str, ...] = ("multilabel", "multiclass", "segmentation")

UNKNOWN_LABEL = -1
"""Multilabel entry meaning "unknown / ignore" (e.g. CheXpert U-Ignore)."""

# Near-miss section names that would otherwise be ignored, silently dropping their items.
_SECTION_ALIASES = {
    "train": "training",
    "labeled": "training",
    "labelled": "training",
    "unlabelled": "unlabeled",
    "unlabel": "unlabeled",
    "val": "validation",
    "valid": "validation",
    "testing": "test",
}


class DatalistError(ValueError):
    """A datalist is malformed; the message names the file, section, item index and key at fault.

    Args:
        message: what is wrong.
        source: the datalist file (or ``"<dict>"``).
        section: the section at fault, if any.
        index: the item index within ``section``, if any.
        key: the item (or top-level) key at fault, if any.
    """

    def __init__(
        self,
        message: str,
        source: str = "<datalist>",
        section: str | None = None,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.source = source
        self.section = section
        self.index = index
        self.key = key
        self.reason = message
        where = [str(source)]
        if section is not None:
            where.append(f"section '{section}'")
        if index is not None:
            where.append(f"item {index}")
        if key is not None:
            where.append(f"key '{key}'")
        super().__init__(f"{', '.join(where)}: {message}")


# --------------------------------------------------------------------------------------------------------------------
# reading


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            # json would keep only the last one, silently dropping e.g. a whole "training" section
            raise ValueError(f"duplicate key '{key}' in a JSON object")
        seen[key] = value
    return seen


def _read_json(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatalistError(f"not valid UTF-8 text (byte {e.start}): {e.reason}", source) from e
    except OSError as e:
        raise DatalistError(f"cannot read the datalist file: {e.strerror or e}", source) from e
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as e:
        raise DatalistError(f"invalid JSON at line {e.lineno}, column {e.colno} (char {e.pos}): {e.msg}", source) from e
    except ValueError as e:
        raise DatalistError(f"invalid JSON: {e}", source) from e
    if not isinstance(data, dict):
        raise DatalistError(f"the top level must be a JSON object, got {type(data).__name__}", source)
    return data


# --------------------------------------------------------------------------------------------------------------------
# labels


def _is_int_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def label_to_vector(label: Any, classes: Sequence[str] | None = None) -> list[int] | None:
    """Returns a classification label as a list of ints, or ``None`` for a segmentation (path) label.

    Args:
        label: a list of ints (multi-hot / one-hot, ``-1`` = unknown), a list of class names, or a mask path.
        classes: the class names, needed to convert a list of names.

    Raises:
        ValueError: ``label`` is a list of names and ``classes`` is missing or lacks one of them, or it holds
            entries that are neither ints nor names.
    """
    if label is None or isinstance(label, str):
        return None
    values = list(label)
    if (values and all(isinstance(v, str) for v in values)) or (not values and classes):
        if not classes:
            raise ValueError(f"label {values} gives class names but the datalist has no top-level 'classes'")
        unknown = [v for v in values if v not in classes]
        if unknown:
            raise ValueError(f"unknown class name(s) {unknown}; 'classes' is {list(classes)}")
        names = set(values)
        return [int(c in names) for c in classes]
    bad = [v for v in values if not _is_int_like(v)]
    if bad:
        raise ValueError(f"label entries must be ints (or class names), got {bad[0]!r}")
    return [int(v) for v in values]


def strip_labels(item: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a copy of ``item`` without label keys, for moving it into the ``"unlabeled"`` section.

    Removes :data:`LABEL_KEYS` and any other key starting with ``"label"`` (e.g. ``"label_names"``) so that no
    supervision leaks into the unlabelled set; keeps ``"image"`` and metadata such as ``"id"`` or ``"patient"``.
    """
    return {k: copy.deepcopy(v) for k, v in item.items() if k not in LABEL_KEYS and not k.startswith("label")}


# --------------------------------------------------------------------------------------------------------------------
# validation


def _item_paths(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, path)`` for each file path an item points at."""
    out: list[tuple[str, str]] = []
    for key in PATH_KEYS:
        value = item.get(key)
        if isinstance(value, str):
            out.append((key, value))
        elif isinstance(value, list) and key != "label":
            out.extend((key, v) for v in value if isinstance(v, str))
    return out


def _check_path_value(value: Any, err: Callable[..., DatalistError], key: str) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise err("is an empty path", key)
        return
    if isinstance(value, list):
        if not value:
            raise err("is an empty list of paths", key)
        for j, v in enumerate(value):
            if not isinstance(v, str) or not v.strip():
                raise err(f"entry {j} must be a non-empty path string, got {v!r}", key)
        return
    raise err(f"must be a path string or a list of path strings, got {type(value).__name__}", key)


def validate_datalist(
    datalist: Mapping[str, Any],
    source: str = "<datalist>",
    check_files: bool = True,
    require_training: bool = False,
    dataset_dir: str | Path | None = None,
    sections: Sequence[str] | None = None,
) -> None:
    """Checks a datalist and raises :class:`DatalistError` on the first problem.

    Checks: the top level is an object; ``"task"`` is one of :data:`TASKS`; ``"classes"`` is a list of unique
    names; each section is a list of dicts with an ``"image"``; no near-miss section names (``"train"``,
    ``"unlabelled"``, ...); ``"training"`` items carry a label key and ``"unlabeled"`` items none; classification
    labels have one length (``len(classes)`` when given), binary values (``-1`` allowed unless the task is
    multiclass), known class names, exactly one positive when the task is multiclass; label kinds (vector vs. mask
    path) agree with each other and with ``"task"``; and, with ``check_files``, every referenced path exists.

    Args:
        datalist: the datalist (paths relative or absolute).
        source: name of the datalist in error messages, usually its file path.
        check_files: whether to check that image / label / mask paths exist.
        require_training: whether an empty (or missing) ``"training"`` section is an error.
        dataset_dir: base for relative paths when checking files (default: the working directory).
        sections: only check these sections (default: all of :data:`SECTIONS`).

    Raises:
        DatalistError: the datalist is malformed.
    """
    if not isinstance(datalist, Mapping):
        raise DatalistError(f"the top level must be a JSON object, got {type(datalist).__name__}", source)
    selected = _check_sections_arg(sections)

    task = datalist.get("task")
    if task is not None and task not in TASKS:
        raise DatalistError(f"unknown task {task!r}; expected one of {list(TASKS)}", source, key="task")
    classes = datalist.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise DatalistError("must be a list of non-empty class-name strings", source, key="classes")
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise DatalistError(f"duplicate class names {duplicates}", source, key="classes")

    for key, value in datalist.items():
        if key in SECTIONS:
            continue
        alias = _SECTION_ALIASES.get(key.lower() if isinstance(key, str) else key)
        looks_like_items = isinstance(value, list) and any(isinstance(v, Mapping) and "image" in v for v in value)
        if alias is not None or looks_like_items:
            hint = f" (did you mean '{alias}'?)" if alias else ""
            raise DatalistError(
                f"unknown section '{key}'{hint}; sections are {list(SECTIONS)} and its items would be ignored",
                source,
                key=key,
            )

    base = Path(dataset_dir).expanduser() if dataset_dir is not None else None
    expected_len: int | None = len(classes) if classes is not None else None
    len_origin = "len(classes)"
    first_kind: tuple[str, str, int, str] | None = None  # (kind, section, index, key)

    for section in selected:
        if section not in datalist:
            continue
        items = datalist[section]
        if not isinstance(items, list):
            raise DatalistError(f"must be a list of items, got {type(items).__name__}", source, section=section)
        for index, item in enumerate(items):

            def err(message: str, key: str | None = None, _s: str = section, _i: int = index) -> DatalistError:
                return DatalistError(message, source, section=_s, index=_i, key=key)

            if not isinstance(item, Mapping):
                raise err(f"must be an object with an 'image', got {type(item).__name__}")
            if "image" not in item:
                raise err("missing required key", "image")
            _check_path_value(item["image"], err, "image")

            present = [k for k in LABEL_KEYS if k in item]
            if section == "unlabeled" and present:
                raise err(
                    f"'unlabeled' items must hold no label keys {list(LABEL_KEYS)}; "
                    f"found '{present[0]}' (move the item to 'training' or drop the key)",
                    present[0],
                )
            if section == "training" and not present:
                raise err(
                    f"'training' items are labelled and need one of {list(LABEL_KEYS)}; "
                    "put unlabelled images in 'unlabeled'"
                )

            for key in ("mask", "seg"):
                if key in item:
                    _check_path_value(item[key], err, key)

            if "label" in item:
                label = item["label"]
                if isinstance(label, str):
                    kind = "segmentation"
                    if not label.strip():
                        raise err("is an empty path", "label")
                    if task in ("multilabel", "multiclass"):
                        raise err(
                            f"is a path {label!r} but the task is {task!r} (expected a list of 0/1 per class)", "label"
                        )
                elif isinstance(label, list):
                    kind = "classification"
                    if task == "segmentation":
                        raise err("is a list but the task is 'segmentation' (expected a mask path)", "label")
                    if any(isinstance(v, str) for v in label) and not all(isinstance(v, str) for v in label):
                        raise err(f"mixes class names and numbers: {label!r}", "label")
                    if not (label and all(isinstance(v, str) for v in label)):
                        for j, v in enumerate(label):
                            if not _is_int_like(v):
                                raise err(f"entry {j} must be an int, got {v!r}", "label")
                        bad = [v for v in label if v not in (0, 1, UNKNOWN_LABEL)]
                        if bad:
                            raise err(f"values must be 0 or 1 (or {UNKNOWN_LABEL} = unknown), got {bad[0]!r}", "label")
                    try:
                        vector = label_to_vector(label, classes)
                    except ValueError as e:
                        raise err(str(e), "label") from e
                    assert vector is not None  # a list always gives a vector
                    if expected_len is None:
                        expected_len, len_origin = len(vector), f"section '{section}' item {index}"
                    elif len(vector) != expected_len:
                        raise err(
                            f"has length {len(vector)} but {len_origin} gives {expected_len} (shape mismatch)", "label"
                        )
                    if task == "multiclass":
                        if UNKNOWN_LABEL in vector:
                            raise err(f"{UNKNOWN_LABEL} (unknown) is only allowed for multilabel tasks", "label")
                        if sum(vector) != 1:
                            raise err(f"a multiclass label must be one-hot (exactly one 1), got {label!r}", "label")
                else:
                    raise err(
                        f"must be a list (classification) or a mask path (segmentation), got {type(label).__name__}",
                        "label",
                    )
                if first_kind is None:
                    first_kind = (kind, section, index, "label")
                elif kind != first_kind[0]:
                    raise err(
                        f"is a {kind} label but section '{first_kind[1]}' item {first_kind[2]} has a "
                        f"{first_kind[0]} label; a datalist holds one kind",
                        "label",
                    )

            if check_files:
                for key, path in _item_paths(item):
                    p = Path(path).expanduser()
                    if base is not None and not p.is_absolute():
                        p = base / p
                    if not p.exists():
                        raise err(f"file not found: {p}", key)

    if require_training and "training" in selected and not datalist.get("training"):
        raise DatalistError("the labelled set is empty; training needs at least one item", source, section="training")


def _check_sections_arg(sections: Sequence[str] | None) -> tuple[str, ...]:
    if sections is None:
        return SECTIONS
    if isinstance(sections, str):
        sections = (sections,)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; expected some of {list(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in sections)


# --------------------------------------------------------------------------------------------------------------------
# paths


def _resolve(path: str, base: Path) -> str:
    p = os.path.expanduser(path)
    if not os.path.isabs(p):
        p = os.path.join(base, p)
    return os.path.normpath(p)


def _map_paths(item: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(item))
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str):
            out[key] = fn(value)
        elif isinstance(value, list) and key != "label":
            out[key] = [fn(v) if isinstance(v, str) else v for v in value]
    return out


def load_datalist(
    datalist: str | Path | Mapping[str, Any],
    dataset_dir: str | Path | None = None,
    check_files: bool = True,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Reads, validates and resolves a datalist.

    Args:
        datalist: a JSON file path, or an already parsed datalist dict (not modified).
        dataset_dir: base for relative paths; default the JSON file's folder, or the working directory for a dict.
        check_files: whether to check that every referenced file exists.
        sections: sections to keep and validate (default all of :data:`SECTIONS`); others are dropped.

    Returns:
        A new dict: metadata copied, every selected section present as a list (empty when missing), every path an
        absolute normalised string, and class-name labels converted to multi-hot lists using ``"classes"``.

    Raises:
        DatalistError: the file cannot be read, is not valid JSON, or the datalist is malformed.
        ValueError: ``sections`` names an unknown section.
    """
    selected = _check_sections_arg(sections)
    if isinstance(datalist, Mapping):
        source = "<dict>"
        raw: Mapping[str, Any] = datalist
        default_base = Path.cwd()
    else:
        path = Path(datalist).expanduser()
        source = str(path)
        raw = _read_json(path)
        default_base = path.resolve().parent
    base = Path(os.path.abspath(Path(dataset_dir).expanduser())) if dataset_dir is not None else default_base

    validate_datalist(raw, source=source, check_files=False, sections=selected)

    classes = raw.get("classes")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS:
            if key not in selected:
                continue
            items = []
            for item in value:
                resolved = _map_paths(item, lambda p: _resolve(p, base))
                if isinstance(resolved.get("label"), list):
                    resolved["label"] = label_to_vector(resolved["label"], classes)
                items.append(resolved)
            out[key] = items
        else:
            out[key] = copy.deepcopy(value)
    for section in selected:
        out.setdefault(section, [])

    if check_files:
        validate_datalist(out, source=source, check_files=True, sections=selected)
    return out


def relativize(datalist: Mapping[str, Any], dataset_dir: str | Path) -> dict[str, Any]:
    """Inverse of the path resolution in :func:`load_datalist`, for writing portable datalist files.

    Absolute paths inside ``dataset_dir`` become relative POSIX paths; paths outside it stay absolute and relative
    paths are left as they are.

    Args:
        datalist: a datalist, typically from :func:`load_datalist`.
        dataset_dir: the folder the written paths will be relative to (usually the output JSON's folder).

    Returns:
        A new datalist dict.
    """
    base = os.path.normpath(os.path.abspath(Path(dataset_dir).expanduser()))

    def rel(path: str) -> str:
        if not os.path.isabs(path):
            return path
        p = os.path.normpath(path)
        try:
            inside = os.path.commonpath([base, p]) == base
        except ValueError:  # different drives
            inside = False
        return Path(os.path.relpath(p, base)).as_posix() if inside else path

    out: dict[str, Any] = {}
    for key, value in datalist.items():
        if key in SECTIONS and isinstance(value, list):
            out[key] = [_map_paths(item, rel) if isinstance(item, Mapping) else copy.deepcopy(item) for item in value]
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------------------------------
# writing


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def save_datalist(datalist: Mapping[str, Any], path: str | Path) -> Path:
    """Writes a datalist atomically as UTF-8 JSON with 4-space indent and a trailing newline.

    Keys keep their insertion order, so the same datalist always gives the same bytes. The file is written to a
    temporary sibling first and moved into place with :func:`os.replace`, so readers never see a partial file.

    Args:
        datalist: the datalist to write (paths are written as they are; see :func:`relativize`).
        path: destination file; missing parent folders are created.

    Returns:
        The destination path.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(datalist, indent=4, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n").encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------------------------------------------------
# task


def infer_task(datalist: Mapping[str, Any]) -> str:
    """Returns the datalist's task: its ``"task"`` field, else inferred from the labelled sections.

    A string ``"label"`` (or, without any ``"label"``, a ``"seg"`` / ``"mask"`` path) means ``"segmentation"``;
    classification labels that all have exactly one 1 (and no ``-1``) mean ``"multiclass"``; anything else is
    ``"multilabel"``.

    Raises:
        DatalistError: ``"task"`` is unknown, or there are no labels to infer it from.
    """
    task = datalist.get("task")
    if task is not None:
        if task not in TASKS:
            raise DatalistError(f"unknown task {task!r}; expected one of {list(TASKS)}", key="task")
        return str(task)
    classes = datalist.get("classes")
    vectors: list[list[int]] = []
    has_seg_path = False
    for section in LABELLED_SECTIONS:
        for item in datalist.get(section) or []:
            if not isinstance(item, Mapping):
                continue
            label = item.get("label")
            if isinstance(label, str):
                return "segmentation"
            if isinstance(label, list):
                if label and all(isinstance(v, str) for v in label) and not classes:
                    vectors.append([1] * len(label))  # names without classes: only the count matters here
                else:
                    vector = label_to_vector(label, classes)
                    if vector is not None:
                        vectors.append(vector)
            elif label is None and any(isinstance(item.get(k), str) for k in ("seg", "mask")):
                has_seg_path = True
    if vectors:
        one_hot = all(sum(v) == 1 and all(x in (0, 1) for x in v) for v in vectors)
        return "multiclass" if one_hot else "multilabel"
    if has_seg_path:
        return "segmentation"
    raise DatalistError(
        "cannot infer the task: no labels in the labelled sections; set the top-level 'task'", key="task"
    )
