"""Seeded, reproducible label-fraction and validation splits of datalists, and the papers' named protocols.

Every function returns a new datalist and leaves its input untouched. For a given input, fraction and seed the
output is identical, so :func:`~s4mi.data.datalist.save_datalist` writes identical bytes. Randomness comes only
from :meth:`random.Random.random` (the one stream Python guarantees across versions) seeded with a string built from
``seed`` and a per-purpose salt, so splits do not change with the Python or NumPy version and each class draws from
its own stream.

Counts use round-half-up (``round_half_up(2.5) == 3``) rather than Python's banker's rounding.

Moved items keep file order. In the output, ``"unlabeled"`` holds the items moved out of ``"training"`` first and
then any items that were already unlabelled.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from s4mi.data.datalist import (
    LABEL_KEYS,
    SECTIONS,
    DatalistError,
    infer_task,
    label_to_vector,
    strip_labels,
    validate_datalist,
)

__all__ = [
    "STRATEGIES",
    "round_half_up",
    "label_fraction_split",
    "recorded_split",
    "split_validation",
    "isic2018_protocol",
    "pranet_protocol",
]

STRATEGIES: tuple[str, ...] = ("auto", "union", "stratified", "random", "first")
_AUTO_STRATEGY = {"multilabel": "union", "multiclass": "stratified", "segmentation": "random"}


def round_half_up(x: float) -> int:
    """Rounds a non-negative count to the nearest int, halves up; tolerant of float noise (``0.2 * 1305``)."""
    return int(math.floor(x + 0.5 + 1e-9))


# --------------------------------------------------------------------------------------------------------------------
# seeded primitives


def _permutation(n: int, seed: int, *salt: Hashable) -> list[int]:
    """A seeded Fisher-Yates permutation of ``range(n)``, stable across Python versions."""
    rng = random.Random(":".join(["s4mi", str(seed), *map(str, salt)]))
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def _allocate(sizes: Sequence[int], total: int, caps: Sequence[int] | None = None, minimum: int = 0) -> list[int]:
    """Splits ``total`` over groups in proportion to ``sizes`` by the largest-remainder method.

    Each non-empty group gets at least ``minimum`` (which may push the sum above ``total``) and at most its cap.
    Ties go to the group that comes first.
    """
    caps = list(sizes) if caps is None else list(caps)
    n = sum(sizes)
    if n == 0 or total <= 0:
        return [min(minimum, c) if s > 0 else 0 for s, c in zip(sizes, caps)]
    quotas = [total * s / n for s in sizes]
    counts = [min(c, max(minimum if s > 0 else 0, math.floor(q + 1e-9))) for s, q, c in zip(sizes, quotas, caps)]
    remaining = total - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    while remaining > 0:
        progressed = False
        for i in order:
            if remaining == 0:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return counts


def _vectors(datalist: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> list[list[int] | None]:
    classes = datalist.get("classes")
    return [label_to_vector(item.get("label"), classes) for item in items]


def _stratum(vector: list[int] | None) -> Hashable:
    if vector is None:
        return None
    positives = [c for c, v in enumerate(vector) if v == 1]
    return positives[0] if len(positives) == 1 else tuple(vector)


def _group(keys: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Indices per key, keys in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _select_stratified(vectors: Sequence[list[int] | None], k: int, seed: int, salt: str) -> list[int]:
    groups = _group([_stratum(v) for v in vectors])
    members = list(groups.values())
    counts = _allocate([len(m) for m in members], k, minimum=1)
    chosen: list[int] = []
    for g, (idx, count) in enumerate(zip(members, counts)):
        perm = _permutation(len(idx), seed, salt, g)
        chosen.extend(idx[p] for p in perm[:count])
    return sorted(chosen)


def _select_union(vectors: Sequence[list[int] | None], fraction: float, seed: int) -> list[int]:
    n_classes = max((len(v) for v in vectors if v is not None), default=0)
    chosen: set[int] = set()
    pools = [[i for i, v in enumerate(vectors) if v is not None and v[c] == 1] for c in range(n_classes)]
    pools.append([i for i, v in enumerate(vectors) if v is None or 1 not in v])  # "no finding"
    for c, pool in enumerate(pools):
        if not pool:
            continue
        count = min(len(pool), max(1, round_half_up(fraction * len(pool))))
        perm = _permutation(len(pool), seed, "union", c)
        chosen.update(pool[p] for p in perm[:count])
    return sorted(chosen)


def _select(
    datalist: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    fraction: float,
    seed: int,
    strategy: str,
    salt: str,
) -> list[int]:
    """Sorted indices of the ``items`` picked by ``strategy`` for a share of ``fraction``."""
    n = len(items)
    if fraction >= 1.0:
        return list(range(n))
    k = min(n, max(1, round_half_up(fraction * n))) if n else 0
    if strategy == "first":
        return list(range(k))
    if strategy == "random":
        return sorted(_permutation(n, seed, salt)[:k])
    vectors = _vectors(datalist, items)
    if all(v is None for v in vectors):
        raise ValueError(f"strategy '{strategy}' needs classification labels (lists of 0/1 per class)")
    if strategy == "stratified":
        return _select_stratified(vectors, k, seed, salt)
    if strategy == "union":
        return _select_union(vectors, fraction, seed)
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")


def _resolve_strategy(datalist: Mapping[str, Any], strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    return _AUTO_STRATEGY[infer_task(datalist)] if strategy == "auto" else strategy


def _check_fraction(name: str, value: float, allow_zero: bool = False, allow_one: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    high_ok = value <= 1 if allow_one else value < 1
    if not (low_ok and high_ok):  # also catches NaN
        interval = ("[" if allow_zero else "(") + "0, 1" + ("]" if allow_one else ")")
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def _assemble(datalist: Mapping[str, Any], records: Mapping[str, Any], sections: Mapping[str, list]) -> dict:
    """Metadata keys in their order, then the ``records`` (e.g. ``"split"``), then the sections in canonical order."""
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in datalist.items() if k not in SECTIONS and k not in records}
    out.update(records)
    for section in SECTIONS:
        if section in sections:
            out[section] = sections[section]
        elif section in datalist:
            out[section] = copy.deepcopy(datalist[section])
    return out


def _labelled_pool(datalist: Mapping[str, Any], section_names: Sequence[str]) -> list[dict[str, Any]]:
    pool: list[dict[str, Any]] = []
    for section in section_names:
        for index, item in enumerate(datalist.get(section) or []):
            if not any(k in item for k in LABEL_KEYS):
                raise DatalistError("item has no label and cannot be pooled", section=section, index=index, key="label")
            pool.append(copy.deepcopy(item))
    return pool


# --------------------------------------------------------------------------------------------------------------------
# public API


def label_fraction_split(datalist: Mapping[str, Any], fraction: float, seed: int = 0, strategy: str = "auto") -> dict:
    """Keeps a ``fraction`` of ``"training"`` labelled and moves the rest, labels stripped, to ``"unlabeled"``.

    Strategies:

    * ``"random"``: a seeded sample of ``round_half_up(fraction * n)`` items (at least one).
    * ``"first"``: the first ``round_half_up(fraction * n)`` items in file order (seed unused).
    * ``"stratified"``: the same total shared over strata (the positive class of one-hot labels, otherwise the
      whole label vector) by largest remainder, at least one item per stratum, sampled per stratum. The total can
      exceed the target only by that one-per-stratum minimum.
    * ``"union"`` (S2MTS2 protocol for multilabel data): for each class ``c`` sample ``round_half_up(fraction *
      n_pos_c)`` (at least one) of the images positive for ``c`` and take the union over classes; images with no
      positive ("no finding", including all-unknown labels) are sampled at the same fraction, so that they are
      represented too. Because multilabel images are drawn once per positive class, more than ``fraction`` of the
      images usually end up labelled; ``"split"["n_labeled"]`` records how many.
    * ``"auto"``: from :func:`~s4mi.data.datalist.infer_task`: multilabel -> union, multiclass -> stratified,
      segmentation -> random.

    Args:
        datalist: a valid datalist with a non-empty ``"training"`` section (paths may be relative or absolute).
        fraction: share of ``"training"`` to keep labelled, in (0, 1]; 1.0 keeps everything labelled.
        seed: random seed; the same seed always gives the same split.
        strategy: one of :data:`STRATEGIES`.

    Returns:
        A new datalist: ``"training"`` holds the labelled items in file order; ``"unlabeled"`` holds the moved items
        (without label keys, see :func:`~s4mi.data.datalist.strip_labels`) in file order followed by the previously
        unlabelled items; other sections and metadata are copied; ``"split"`` records ``fraction``, ``seed``, the
        resolved ``strategy``, ``n_labeled`` and ``n_unlabeled`` (the size of the whole output ``"unlabeled"``).

    Raises:
        ValueError: ``fraction`` is not in (0, 1] or ``strategy`` is unknown or needs classification labels.
        DatalistError: the datalist is malformed or has no training items.
    """
    _check_fraction("fraction", fraction)
    validate_datalist(datalist, check_files=False, require_training=True)
    already = recorded_split(datalist)
    if already is not None:
        raise ValueError(
            f"this datalist is already split (label fraction {already['fraction']}, seed {already.get('seed')}): "
            "splitting it again would take a share of the labelled share; split the original datalist instead"
        )
    resolved = _resolve_strategy(datalist, strategy)
    training = datalist["training"]
    picked = set(_select(datalist, training, fraction, seed, resolved, salt="labelled"))
    labelled = [copy.deepcopy(item) for i, item in enumerate(training) if i in picked]
    _check_every_class_labelled(datalist, training, labelled, fraction, resolved)
    moved = [strip_labels(item) for i, item in enumerate(training) if i not in picked]
    unlabeled = moved + copy.deepcopy(list(datalist.get("unlabeled") or []))
    split = {
        "fraction": fraction,
        "seed": seed,
        "strategy": resolved,
        "n_labeled": len(labelled),
        "n_unlabeled": len(unlabeled),
    }
    return _assemble(datalist, {"split": split}, {"training": labelled, "unlabeled": unlabeled})


def _check_every_class_labelled(
    datalist: Mapping[str, Any], training: Sequence[Any], labelled: Sequence[Any], fraction: float, strategy: str
) -> None:
    """Refuse a classification split that leaves a class with positives in ``training`` without any labelled one.

    Raises:
        ValueError: naming the classes, the fraction and the strategy.
    """
    before, after = _vectors(datalist, training), _vectors(datalist, labelled)
    if not any(v is not None for v in before):
        return
    width = max(len(v) for v in before if v is not None)

    def positives(vectors: Sequence[list[int] | None]) -> list[int]:
        return [sum(1 for v in vectors if v is not None and len(v) > c and v[c] == 1) for c in range(width)]

    had, kept = positives(before), positives(after)
    lost = [c for c in range(width) if had[c] > 0 and kept[c] == 0]
    if lost:
        classes = datalist.get("classes") or []
        names = [classes[c] if c < len(classes) else f"class {c}" for c in lost]
        raise ValueError(
            f"label_fraction {fraction} (strategy {strategy!r}) leaves {names} without any labelled image "
            f"({[had[c] for c in lost]} in the training set): use a larger fraction, or the 'stratified' or 'union' "
            "strategy, which keep at least one image of every class"
        )


def recorded_split(datalist: Mapping[str, Any]) -> dict[str, Any] | None:
    """The label-fraction split a datalist records, if any.

    :func:`label_fraction_split`, :func:`pranet_protocol` and :func:`isic2018_protocol` (and so ``s4mi split``)
    record their split as a top-level ``"split"`` object with the labelled ``"fraction"`` of the original training
    set. A datalist that holds one has been split already and must not be split again.

    Args:
        datalist: a datalist (only its top-level ``"split"`` is read).

    Returns:
        A copy of the ``"split"`` record when it is an object with a numeric ``"fraction"``, else ``None``.
    """
    split = datalist.get("split")
    if not isinstance(split, Mapping):
        return None
    fraction = split.get("fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        return None
    return copy.deepcopy(dict(split))


def split_validation(datalist: Mapping[str, Any], val_fraction: float, seed: int, strategy: str = "random") -> dict:
    """Moves a seeded ``val_fraction`` of ``"training"`` into ``"validation"``.

    Args:
        datalist: a valid datalist with a non-empty ``"training"`` section.
        val_fraction: share of ``"training"`` to move, in [0, 1); ``round_half_up(val_fraction * n)`` items (0 moves
            nothing).
        seed: random seed.
        strategy: ``"random"``, ``"stratified"`` (by class, see :func:`label_fraction_split`), ``"first"`` or
            ``"auto"`` (stratified for multiclass data, random otherwise).

    Returns:
        A new datalist whose ``"validation"`` holds the previous validation items followed by the moved ones (file
        order), with the rest left in ``"training"``; top-level ``"validation_split"`` records ``val_fraction``,
        ``seed``, ``strategy``, ``n_validation`` and ``n_training``.

    Raises:
        ValueError: ``val_fraction`` is not in [0, 1), would leave no training item, or ``strategy`` is unsupported.
        DatalistError: the datalist is malformed or has no training items.
    """
    _check_fraction("val_fraction", val_fraction, allow_zero=True, allow_one=False)
    validate_datalist(datalist, check_files=False, require_training=True)
    if strategy == "auto":
        strategy = "stratified" if infer_task(datalist) == "multiclass" else "random"
    if strategy not in ("random", "stratified", "first"):
        raise ValueError(f"split_validation supports 'random', 'stratified', 'first' and 'auto', got {strategy!r}")
    training = datalist["training"]
    n_val = round_half_up(val_fraction * len(training))
    if n_val >= len(training):
        raise ValueError(f"val_fraction={val_fraction} would move all {len(training)} training items to validation")
    if n_val == 0:
        picked: set[int] = set()
    elif strategy == "stratified":
        picked = set(_select_stratified(_vectors(datalist, training), n_val, seed, "validation"))
    elif strategy == "first":
        picked = set(range(n_val))
    else:
        picked = set(_permutation(len(training), seed, "validation")[:n_val])
    kept = [copy.deepcopy(item) for i, item in enumerate(training) if i not in picked]
    moved = [copy.deepcopy(item) for i, item in enumerate(training) if i in picked]
    validation = copy.deepcopy(list(datalist.get("validation") or [])) + moved
    record = {
        "val_fraction": val_fraction,
        "seed": seed,
        "strategy": strategy,
        "n_validation": len(validation),
        "n_training": len(kept),
    }
    return _assemble(datalist, {"validation_split": record}, {"training": kept, "validation": validation})


def pranet_protocol(
    datalist: Mapping[str, Any], val_fraction: float = 0.1, labelled_fraction: float = 0.2, seed: int = 2022
) -> dict:
    """The polyp-segmentation protocol of the semi-supervised PraNet-based papers (Kvasir-SEG + CVC-ClinicDB).

    The training pool is split into ``val_fraction`` validation (seeded random); of the remaining images
    ``labelled_fraction`` stay labelled (seeded random) and the rest become unlabelled. ``"test"`` is kept as is.
    For the usual 1450-image pool: 145 validation, 261 labelled, 1044 unlabelled.

    Args:
        datalist: a valid datalist whose ``"training"`` is the pool.
        val_fraction: share of the pool for validation.
        labelled_fraction: share of the remaining pool kept labelled.
        seed: random seed for both steps.

    Returns:
        A new datalist with ``"split"`` = ``{"protocol": "pranet", "fraction", "seed", "strategy", "val_fraction",
        "n_labeled", "n_unlabeled", "n_validation"}``.
    """
    _check_fraction("labelled_fraction", labelled_fraction)
    step = split_validation(datalist, val_fraction, seed, strategy="random")
    record = step.pop("validation_split")
    out = label_fraction_split(step, labelled_fraction, seed, strategy="random")
    split = out["split"]
    out["split"] = {
        "protocol": "pranet",
        "fraction": split["fraction"],
        "seed": seed,
        "strategy": split["strategy"],
        "val_fraction": val_fraction,
        "n_labeled": split["n_labeled"],
        "n_unlabeled": split["n_unlabeled"],
        "n_validation": record["n_validation"],
    }
    return out


def isic2018_protocol(datalist: Mapping[str, Any], labelled_fraction: float = 0.2, seed: int = 0) -> dict:
    """The ISIC 2018 skin-lesion protocol of SRC-MT.

    All labelled items (``"training"``, then ``"validation"``, then ``"test"``) are pooled and split 7:1:2 into
    train / validation / test, stratified by class and seeded: the part sizes are ``round_half_up(0.7 n)``,
    ``round_half_up(0.1 n)`` and the rest, shared over classes by largest remainder. Each part keeps the pool order,
    which is taken to be the image-id order (as in ISIC's ground-truth CSV). The FIRST
    ``round_half_up(labelled_fraction * n_train)`` items of the train part stay labelled; the rest become unlabelled,
    followed by any items that were already in ``"unlabeled"``.

    Args:
        datalist: a valid classification datalist, items in image-id order.
        labelled_fraction: share of the train part kept labelled.
        seed: random seed of the 7:1:2 split.

    Returns:
        A new datalist with ``"split"`` = ``{"protocol": "isic2018", "fraction", "seed", "strategy": "first",
        "ratios": [0.7, 0.1, 0.2], "n_labeled", "n_unlabeled", "n_validation", "n_test"}``.

    Raises:
        DatalistError: the datalist is malformed or a pooled item has no label.
        ValueError: ``labelled_fraction`` is not in (0, 1] or the labels are not classification labels.
    """
    _check_fraction("labelled_fraction", labelled_fraction)
    validate_datalist(datalist, check_files=False, require_training=True)
    pool = _labelled_pool(datalist, ("training", "validation", "test"))
    vectors = _vectors(datalist, pool)
    if any(v is None for v in vectors):
        raise ValueError("the ISIC 2018 protocol needs classification labels (lists of 0/1 per class)")
    n = len(pool)
    n_train, n_val = round_half_up(0.7 * n), round_half_up(0.1 * n)
    members = list(_group([_stratum(v) for v in vectors]).values())
    sizes = [len(m) for m in members]
    train_counts = _allocate(sizes, n_train)
    val_counts = _allocate(sizes, n_val, caps=[s - t for s, t in zip(sizes, train_counts)])
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for g, (idx, n_tr, n_va) in enumerate(zip(members, train_counts, val_counts)):
        shuffled = [idx[p] for p in _permutation(len(idx), seed, "isic2018", g)]
        parts["train"].extend(shuffled[:n_tr])
        parts["validation"].extend(shuffled[n_tr : n_tr + n_va])
        parts["test"].extend(shuffled[n_tr + n_va :])
    train = [pool[i] for i in sorted(parts["train"])]
    validation = [pool[i] for i in sorted(parts["validation"])]
    test = [pool[i] for i in sorted(parts["test"])]
    n_labelled = min(len(train), max(1, round_half_up(labelled_fraction * len(train))))
    labelled = train[:n_labelled]
    unlabeled = [strip_labels(item) for item in train[n_labelled:]]
    unlabeled += copy.deepcopy(list(datalist.get("unlabeled") or []))
    split = {
        "protocol": "isic2018",
        "fraction": labelled_fraction,
        "seed": seed,
        "strategy": "first",
        "ratios": [0.7, 0.1, 0.2],
        "n_labeled": len(labelled),
        "n_unlabeled": len(unlabeled),
        "n_validation": len(validation),
        "n_test": len(test),
    }
    sections = {"training": labelled, "unlabeled": unlabeled, "validation": validation, "test": test}
    return _assemble(datalist, {"split": split}, sections)
