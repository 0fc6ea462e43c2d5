"""The S4MI protocol: bundles x label fractions x seeds -> results CSV, Markdown table and plot.

Every run goes through ``python -m monai.bundle run`` in a child process, exactly as a user would run the bundle,
so the numbers measure the shipped bundles; the child's wall time and peak resident memory are recorded. A run
whose ``result.json`` exists is skipped, so a stopped benchmark resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import statistics
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from s4mi.bundle import locate_bundle_root
from s4mi.bundle.stages import (
    StageRun,
    bundle_stages,
    defined_overrides,
    first_stage_overrides,
    is_semi_supervised,
    monai_bundle_command,
    next_stage_overrides,
    run_command,
)
from s4mi.data.datalist import load_datalist
from s4mi.data.phantoms import PHANTOMS
from s4mi.data.prepare import phantom_datalist

__all__ = [
    "RunSpec",
    "method_is_semi_supervised",
    "parse_method",
    "parse_overrides",
    "run_grid",
    "summarise",
    "write_reports",
]


def parse_overrides(pairs: Sequence[str], what: str = "overrides") -> dict[str, Any]:
    """``key=value`` pairs (each value parsed as JSON when it parses) into a dict of bundle config overrides.

    Raises:
        ValueError: a pair is not ``key=value`` (``what`` names where it came from).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_method(method: str) -> tuple[str, dict[str, Any]]:
    """``"bundle"`` or ``"bundle:key=value,key=value"`` -> (bundle name, config overrides of this variant).

    A variant is a bundle run with other settings under its own name in the tables, e.g.
    ``s2mts2_cxr_classification:num_key_views=1,jcl_lambda_max=0`` (MoCo v2 pretraining, then Mean Teacher).
    Values are parsed as JSON when they parse.

    Raises:
        ValueError: a variant setting is not ``key=value``.
    """
    bundle, _, spec = method.partition(":")
    return bundle, parse_overrides([p for p in spec.split(",") if p], what=f"method {method!r}")


#: longest run folder name kept as is; file systems refuse names over 255 bytes
_MAX_DIRNAME = 200


def _dirname(method: str) -> str:
    """The run folder of a method: readable, and unique to it.

    No "#" in the name: MONAI's config parser rewrites "#" to "::" inside the output_dir string it is given, so a
    variant such as ``unsup_weight#_target_=...`` would train in one folder and be looked for in another. A name
    over ``_MAX_DIRNAME`` characters (a variant with many settings) is cut and ends with a hash of the whole method,
    so that it stays unique and the file system accepts it; ``result.json`` keeps the full method.
    """
    name = method.replace(":", "__").replace("=", "-").replace(",", "_").replace("/", "_").replace("#", ".")
    if len(name) > _MAX_DIRNAME:
        name = f"{name[: _MAX_DIRNAME - 13]}~{hashlib.sha1(method.encode()).hexdigest()[:12]}"
    return name


@dataclass
class RunSpec:
    """One cell of the grid; ``method`` is a bundle name or a variant (see :func:`parse_method`)."""

    method: str
    fraction: float
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{_dirname(self.method)}/frac{self.fraction:g}/seed{self.seed}"


_PRETRAIN_LOCKS: dict[Path, threading.Lock] = {}
_PRETRAIN_LOCKS_GUARD = threading.Lock()


def first_stage_dir(spec: RunSpec, out_dir: Path, pretrain_seed: int | None = None) -> tuple[Path, bool]:
    """Where the first stage of ``spec``'s bundle runs, and whether that stage reads labels.

    The folder is keyed on the bundle, the variant settings that ``configs/pretrain.json`` itself defines (so
    variants that change only the second stage share it), the seed, and the label fraction when the stage reads
    labels (``"pretrain_uses_labels": true``). With ``pretrain_seed`` a stage that reads no label runs with that
    seed, once for every seed of the grid (see :func:`run_grid`).
    """
    bundle_name, variant = parse_method(spec.method)
    (stage0,) = bundle_stages(bundle_name, ["pretrain"])
    keys = stage0.read()
    shared = ",".join(f"{k}={v}" for k, v in variant.items() if k in keys)
    uses_labels = stage0.uses_labels
    pre_dir = out_dir / "pretrain" / _dirname(f"{bundle_name}:{shared}" if shared else bundle_name)
    seed = spec.seed if uses_labels or pretrain_seed is None else pretrain_seed
    return (pre_dir / f"frac{spec.fraction:g}" if uses_labels else pre_dir) / f"seed{seed}", uses_labels


def _pretrain(
    spec: RunSpec,
    bundle: Path,
    out_dir: Path,
    args: dict[str, Any],
    env: dict[str, str],
    pretrain_seed: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the bundle's first stage (``configs/pretrain.json``) once per (method, seed); return its weights and cost.

    Self-supervised pretraining reads every training image (labelled or not) and no label, so one run serves every
    label fraction. A first stage that trains on the labels (``"pretrain_uses_labels": true``, e.g. the teacher of
    online pseudo-labelling) runs once per (fraction, seed). Variants that differ only in settings the first stage
    does not read share it. Runs of the grid that need the same first stage wait for it; a finished one is reused,
    a stopped one resumes. With ``pretrain_seed``, a first stage that reads no label runs once with that seed and
    serves every seed. Returns the overrides that link the second stage to it, and its cost (and seed).
    """
    pre_dir, uses_labels = first_stage_dir(spec, out_dir, pretrain_seed)
    seed = spec.seed if uses_labels or pretrain_seed is None else pretrain_seed
    (stage,) = bundle_stages(bundle, ["pretrain"])
    link = next_stage_overrides(pre_dir)
    weights = Path(link["pretrained_ckpt"])
    cost_file = pre_dir / "pretrain.json"
    with _PRETRAIN_LOCKS_GUARD:
        lock = _PRETRAIN_LOCKS.setdefault(pre_dir, threading.Lock())
    with lock:
        if not (weights.is_file() and cost_file.is_file()):
            pre_dir.mkdir(parents=True, exist_ok=True)
            pre_args = defined_overrides(
                [stage.config_file], stage.configs, first_stage_overrides(stage, {**args, "seed": seed}, pre_dir)
            )
            cmd = monai_bundle_command([stage.config_file], stage.configs, pre_args)
            run = run_command(cmd, pre_dir / "pretrain.log", env)
            if run.code != 0 or not weights.is_file():
                raise RuntimeError(
                    f"pretraining for {spec.name} failed (exit {run.code}); see {pre_dir / 'pretrain.log'}"
                )
            cost = {"pretrain_wall_s": round(run.wall_s, 1), "pretrain_peak_rss_mib": round(run.peak_rss_mib, 1)}
            tmp = cost_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cost) + "\n")
            os.replace(tmp, cost_file)
    return link, {**json.loads(cost_file.read_text()), "pretrain_seed": seed}


def _overlay(configs: Path, name: Any) -> list[str]:
    """``[configs/<name>.json]`` for a variant's ``overlay=<name>`` (merged over train.json), or ``[]``."""
    if not name:
        return []
    path = configs / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"overlay {name!r}: {path} does not exist")
    return [str(path)]


def _check_user_keys(keys: Sequence[str], configs: Path, overlay: list[str]) -> None:
    """Raise when a setting given to the benchmark (``--set``, a method variant) names nothing in any stage."""
    from s4mi.bundle.overrides import defines_key, load_stage_config, unknown_override

    stages = [[str(configs / "train.json"), *overlay]]
    if (configs / "pretrain.json").is_file():
        stages.append([str(configs / "pretrain.json")])
    parsers = [load_stage_config(files, str(configs / "metadata.json")) for files in stages]
    for key in keys:
        if not any(defines_key(p, key) for p in parsers):
            raise ValueError(unknown_override(parsers[0], key, where=f"{configs.parent.name}'s configs"))


def _last_jsonl(path: Path) -> dict[str, Any]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
    if not lines:
        raise RuntimeError(f"{path} holds no metrics: the run wrote none")
    return json.loads(lines[-1])


def run_one(
    spec: RunSpec,
    out_dir: Path,
    task_args: dict[str, Any],
    threads: int | None = None,
    reevaluate: bool = False,
    pretrain_seed: int | None = None,
) -> dict[str, Any]:
    """Train then evaluate one bundle run; return its result row (also saved as ``result.json``).

    A run with a ``result.json`` is skipped; with ``reevaluate`` its evaluation alone runs again (after a change to
    a metric, say) and the test metrics are replaced, keeping the training time and memory measured before.
    ``pretrain_seed``: see :func:`run_grid`.
    """
    run_dir = out_dir / "runs" / spec.name
    result_file = run_dir / "result.json"
    previous = json.loads(result_file.read_text()) if result_file.is_file() else None
    if previous is not None and not reevaluate:
        # results written before the counts (or the per-class AUCs of an evaluation) were recorded get them
        per_class = per_class_auc(run_dir / "per_class_metrics.csv")
        return {**split_counts(run_dir), **previous, **({"per_class_auc": per_class} if per_class else {})}
    run_dir.mkdir(parents=True, exist_ok=True)
    bundle_name, variant = parse_method(spec.method)
    bundle = Path(locate_bundle_root(bundle_name))
    configs = bundle / "configs"
    overlay = _overlay(configs, variant.pop("overlay", None))
    args: dict[str, Any] = {
        "bundle_root": str(bundle),
        "output_dir": str(run_dir),
        "ckpt_dir": str(run_dir / "models"),
        "label_fraction": spec.fraction,
        "seed": spec.seed,
        "progress_bar": False,
        **task_args,
        **variant,
        **spec.overrides,
    }
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    stages = bundle_stages(bundle)
    _check_user_keys(list(variant), configs, overlay)  # a --set key may belong to another method of the grid
    train = stages[-1]
    pretrain_cost: dict[str, Any] = {}
    if previous is None and len(stages) > 1 and "pretrained_ckpt" not in args:
        link, pretrain_cost = _pretrain(spec, bundle, out_dir, args, env, pretrain_seed)
        args.update(link)
    trained: StageRun | None = None
    train_args: dict[str, Any] = {}
    if previous is None:
        train_files: list[str | Path] = [train.config_file, *overlay]
        train_args = defined_overrides(train_files, configs, args)
        train_cmd = monai_bundle_command(train_files, configs, train_args)
        trained = run_command(train_cmd, run_dir / "train.log", env)
        if trained.code != 0:
            raise RuntimeError(f"training {spec.name} failed (exit {trained.code}); see {run_dir / 'train.log'}")
    eval_files: list[str | Path] = [train.config_file, *overlay, configs / "evaluate.json"]
    eval_cmd = monai_bundle_command(eval_files, configs, defined_overrides(eval_files, configs, args))
    evaluated = run_command(eval_cmd, run_dir / "evaluate.log", env)
    if evaluated.code != 0:
        raise RuntimeError(f"evaluating {spec.name} failed (exit {evaluated.code}); see {run_dir / 'evaluate.log'}")
    eval_wall, eval_peak = evaluated.wall_s, evaluated.peak_rss_mib
    test = _last_jsonl(run_dir / "test_metrics.jsonl")
    if previous is not None:
        row = {k: v for k, v in previous.items() if not k.startswith("test_") and k != "per_class_auc"}
        row["eval_wall_s"] = round(eval_wall, 1)
    else:
        assert trained is not None
        metrics = run_dir / "metrics.jsonl"  # none when the overlay trains nothing (an exported first-stage model)
        val = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.is_file() else []
        row = {
            **asdict(spec),
            "train_wall_s": round(trained.wall_s, 1),
            "eval_wall_s": round(eval_wall, 1),
            "peak_rss_mib": round(max(trained.peak_rss_mib, eval_peak), 1),
            "epochs": len(val),
            **pretrain_cost,
        }
        row.pop("overrides")
        if "epoch_length" in task_args and train_args.get("epoch_length") == task_args["epoch_length"]:
            row["semi_steps"] = "equal"  # run_grid(semi_steps="equal") set this run's steps per epoch
    row.update({f"test_{k.removeprefix('val_')}": v for k, v in test.items() if k not in ("epoch", "wall_s")})
    per_class = per_class_auc(run_dir / "per_class_metrics.csv")
    if per_class:
        row["per_class_auc"] = per_class
    row.update(split_counts(run_dir))
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=4) + "\n")
    os.replace(tmp, result_file)
    return row


def per_class_auc(path: Path) -> dict[str, float]:
    """Each class's test AUC from the ``per_class_metrics.csv`` an evaluation wrote (the skin classification bundles,
    :class:`s4mi.handlers.PerClassMetrics`), without the ``mean`` row; empty when there is no such file."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["class"]: float(r["auc"]) for r in csv.DictReader(f) if r["class"] != "mean"}


def task_unlabeled(task: str) -> int:
    """How many images the task's datalist lists in its own ``unlabeled`` section (a phantom has none)."""
    if task in PHANTOMS:
        return 0
    return len(load_datalist(Path(task), check_files=False).get("unlabeled") or [])


def split_counts(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The labelled and unlabelled training images a run used, from the split it saved (``output_dir/split.json``).

    Returns ``{"labelled": n, "unlabelled": u, "labelled_share": n / (n + u)}``, or ``{}`` when the run saved no
    split. The share is that of the labelled images among all training images (labelled and unlabelled), which
    differs from the label fraction asked for when the datalist has an ``unlabeled`` section of its own.
    """
    path = Path(run_dir) / "split.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    n, u = len(data.get("training") or []), len(data.get("unlabeled") or [])
    return {"labelled": n, "unlabelled": u, "labelled_share": n / (n + u) if n + u else float("nan")}


def task_arguments(task: str, phantom_n: int = 1000) -> tuple[dict[str, Any], int]:
    """Bundle overrides for a task (a phantom name or a datalist path) and its full training-set size."""
    if task in PHANTOMS:
        datalist = phantom_datalist(task, n=phantom_n)
        args: dict[str, Any] = {"phantom": task, "phantom_n": phantom_n, "dataset_dir": str(datalist.parent)}
    else:
        datalist = Path(task)
        if not datalist.is_file():
            raise FileNotFoundError(f"task {task!r} is neither a phantom ({', '.join(PHANTOMS)}) nor a datalist file")
        args = {"datalist": str(datalist.resolve())}
    n_train = len(load_datalist(datalist, check_files=False).get("training", []))
    return args, n_train


def method_is_semi_supervised(method: str) -> bool:
    """:func:`s4mi.bundle.stages.is_semi_supervised` for a method: its bundle's ``train.json`` merged with the
    variant's overlay (``overlay=export_teacher`` trains nothing and says ``"semi_supervised": false``).

    Raises:
        FileNotFoundError: the bundle or the variant's overlay does not exist.
    """
    name, variant = parse_method(method)
    configs = Path(locate_bundle_root(name)) / "configs"
    return is_semi_supervised(configs / "train.json", _overlay(configs, variant.get("overlay")))


def run_grid(
    task: str,
    methods: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    equal_steps: bool = True,
    phantom_n: int = 1000,
    threads: int | None = None,
    reevaluate: bool = False,
    jobs: int = 1,
    pretrain_seed: int | None = None,
    semi_steps: str = "bundle",
) -> list[dict[str, Any]]:
    """Run every (method, fraction, seed) and return the result rows.

    At fraction 1 every training image of the task is labelled: a semi-supervised bundle runs only when the datalist
    has an ``unlabeled`` section of its own, and is skipped otherwise, with a line on the console saying so. Runs
    that finished before (their ``result.json`` exists) are reused, also said on the console.

    Args:
        task: phantom name or datalist path.
        methods: bundle names.
        fractions: label fractions in (0, 1].
        seeds: seeds (split and initialisation).
        out_dir: results folder; finished runs there are skipped.
        overrides: bundle config overrides applied to every run.
        equal_steps: draw as many samples per epoch as the full training set holds, so every fraction trains
            for the same number of steps.
        phantom_n: phantom size when ``task`` is a phantom.
        threads: OMP threads per run.
        reevaluate: evaluate finished runs again (see :func:`run_one`).
        jobs: runs at a time (each a child process; give ``threads`` so that jobs x threads fits the cores).
        pretrain_seed: run each method's self-supervised first stage once, with this seed, and fine-tune from it at
            every seed (None: one pretraining per seed). The seed spread then measures the label subset and the
            fine-tuning alone, not the pretraining; rows record ``pretrain_seed`` and the report says so. It saves
            the pretraining's cost for every seed but the first. A first stage that reads labels still runs per
            (fraction, seed).
        semi_steps: steps per epoch of the semi-supervised bundles. ``"bundle"``: each bundle's own ``epoch_length``
            (one pass over its unlabelled loader, or over the longer loader for cross teaching), which changes with
            the fraction and differs from the supervised runs'. ``"equal"`` (with ``equal_steps``): an epoch of the
            supervised runs' length, the full training set in full labelled batches (``epoch_length`` set to
            ``n_train // batch_size``, the batch size the run resolves, a variant's included; a supervised run takes
            one step more when its last batch is partial), so that at every fraction every method sees as many
            labelled images per epoch. A variant's own ``epoch_length`` wins. Rows of such runs record
            ``"semi_steps": "equal"``.

    Raises:
        ValueError: ``semi_steps`` is not ``"bundle"`` or ``"equal"``, or is ``"equal"`` without ``equal_steps``.
    """
    if semi_steps not in ("bundle", "equal"):
        raise ValueError(f"semi_steps must be 'bundle' or 'equal', got {semi_steps!r}")
    if semi_steps == "equal" and not equal_steps:
        raise ValueError("semi_steps='equal' matches the supervised runs' steps, which equal_steps=False leaves free")
    out = Path(out_dir)
    if "#" in str(out):
        raise ValueError(
            f"benchmark output folder {str(out)!r} contains '#', which MONAI bundle configs rewrite to '::'"
        )
    out.mkdir(parents=True, exist_ok=True)
    task_args, n_train = task_arguments(task, phantom_n)
    if equal_steps:
        task_args["samples_per_epoch"] = n_train
    if semi_steps == "equal":
        # only the semi-supervised bundles define epoch_length (defined_overrides drops it for the others); the
        # expression lets the bundle divide by its own resolved batch size
        task_args["epoch_length"] = f"$max(1, {n_train} // @batch_size)"
    semi = {m: method_is_semi_supervised(m) for m in methods}
    no_unlabeled = task_unlabeled(task) == 0
    skipped = [m for m in methods if semi[m] and no_unlabeled and any(f >= 1.0 for f in fractions)]
    for m in skipped:
        print(
            f"s4mi benchmark: skipping {m} at 100 % labels ({len(seeds)} run(s)): it is semi-supervised and at "
            f"fraction 1 the task {task!r} leaves no unlabelled image (its datalist has no 'unlabeled' section); "
            "give a datalist with an 'unlabeled' section to run it at 100 %",
            flush=True,
        )
    specs = [
        RunSpec(m, f, s, dict(overrides or {}))
        for m in methods
        for f in fractions
        for s in seeds
        if not (m in skipped and f >= 1.0)
    ]
    finished = [spec.name for spec in specs if (out / "runs" / spec.name / "result.json").is_file()]
    if finished and not reevaluate:
        print(
            f"s4mi benchmark: {len(finished)} of {len(specs)} run(s) already finished in {out / 'runs'} are reused, "
            "not run again (pass --reevaluate to test them again, or delete their result.json to train again)",
            flush=True,
        )
    want = "equal" if semi_steps == "equal" else None
    other = [
        spec.name
        for spec in specs
        if spec.name in finished
        and semi[spec.method]
        and "epoch_length" not in parse_method(spec.method)[1]
        and json.loads((out / "runs" / spec.name / "result.json").read_text()).get("semi_steps") != want
    ]
    if other:
        print(
            f"s4mi benchmark: warning: {len(other)} reused semi-supervised run(s) trained with other steps per epoch "
            f"than --semi-steps {semi_steps} gives ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
            "delete their result.json to train them again",
            flush=True,
        )
    rows: list[dict[str, Any] | None] = [None] * len(specs)
    with tqdm(total=len(specs), desc="s4mi benchmark", unit="run", file=sys.stdout) as bar:
        if jobs <= 1:
            for i, spec in enumerate(specs):
                bar.set_postfix_str(spec.name)
                rows[i] = run_one(spec, out, task_args, threads, reevaluate, pretrain_seed)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {
                    pool.submit(run_one, specs[i], out, task_args, threads, reevaluate, pretrain_seed): i
                    for i in start_order(specs)
                }
                for future in as_completed(futures):
                    rows[futures[future]] = future.result()
                    bar.set_postfix_str(specs[futures[future]].name)
                    bar.update()
    return [r for r in rows if r is not None]


def start_order(specs: Sequence[RunSpec]) -> list[int]:
    """The order in which parallel jobs start the runs of a grid: method innermost, i.e. each (fraction, seed) of
    every method before the next (fraction, seed).

    The runs of a method with a first stage wait for its one pretraining; in grid order (method outermost) the second
    job would sit idle through it. Method innermost, the jobs start different methods, so two pretrainings (or a
    pretraining and another method's runs) go side by side. Results keep the grid order.
    """
    methods = list(dict.fromkeys(s.method for s in specs))
    cells = list(dict.fromkeys((s.fraction, s.seed) for s in specs))
    return sorted(
        range(len(specs)),
        key=lambda i: (cells.index((specs[i].fraction, specs[i].seed)), methods.index(specs[i].method)),
    )


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k.startswith("test_") and k not in cols]
    return cols


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (method, fraction)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], float(r["fraction"])), []).append(r)
    out = []
    for (method, fraction), rs in sorted(groups.items()):
        s: dict[str, Any] = {"method": method, "fraction": fraction, "n_seeds": len(rs)}
        if all("labelled" in r for r in rs):
            counts = [int(r["labelled"]) for r in rs]
            s.update(labelled_min=min(counts), labelled_max=max(counts))
            s["labelled_share"] = statistics.fmean(float(r["labelled_share"]) for r in rs)
        for col in [*_metric_columns(rs), "train_wall_s", "pretrain_wall_s", "peak_rss_mib"]:
            vals = [float(r[col]) for r in rs if col in r and not math.isnan(float(r[col]))]
            s[col] = statistics.fmean(vals) if vals else float("nan")
            s[col + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def write_reports(rows: list[dict[str, Any]], out_dir: str | os.PathLike, command: str = "") -> dict[str, Path]:
    """Write ``results.csv`` (every run), ``results.md`` (mean +- std) and ``results.png``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = _metric_columns(rows)
    csv_path = out / "results.csv"
    pretrained = any("pretrain_wall_s" in r for r in rows)
    fields = ["method", "fraction", "seed", *metrics, "epochs", "train_wall_s", "eval_wall_s", "peak_rss_mib"]
    if any("labelled" in r for r in rows):
        fields[3:3] = ["labelled", "unlabelled", "labelled_share"]
    if pretrained:
        fields[-1:-1] = ["pretrain_wall_s"]
    if any("pretrain_seed" in r for r in rows):
        fields[-1:-1] = ["pretrain_seed"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["method"], r["fraction"], r["seed"])):
            w.writerow(r)
    summary = summarise(rows)
    head = [
        "method",
        "labels",
        "seeds",
        *[m.removeprefix("test_") for m in metrics],
        "train time (s)",
        *(["pretrain time (s)"] if pretrained else []),
        "peak RSS (MiB)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["method"], _labels_cell(s), str(s["n_seeds"])]
        cells += [f"{s[m]:.4f} ± {s[m + '_std']:.4f}" for m in metrics]
        cells.append(f"{s['train_wall_s']:.0f}")
        if pretrained:
            pre = s["pretrain_wall_s"]
            cells.append("-" if math.isnan(pre) else f"{pre:.0f}")
        cells.append(f"{s['peak_rss_mib']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    md_path = out / "results.md"
    preamble = f"Command: `{command}`\n\n" if command else ""
    legend = "Test-set metrics, mean ± sample std over seeds."
    if any("labelled_min" in s for s in summary):
        legend += (
            " Labels: the labelled training images each run used and their share of all training images (labelled"
            " and unlabelled), from its split.json; the label fraction asked for is in results.csv."
        )
    shared = sorted({str(r["pretrain_seed"]) for r in rows if "pretrain_seed" in r and r["pretrain_seed"] != r["seed"]})
    if shared:
        legend += (
            f" Self-supervised pretraining ran once per method (seed {', '.join(shared)}) and every seed fine-tuned"
            " from it: the spread over seeds is that of the label subset and the fine-tuning, not of the pretraining."
        )
    md_path.write_text(preamble + legend + "\n\n" + "\n".join(lines) + "\n" + _per_class_section(rows, summary))
    png_path = out / "results.png"
    _plot(summary, metrics, png_path)
    return {"csv": csv_path, "markdown": md_path, "plot": png_path}


def _per_class_section(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    """A second table, each class's test AUC (mean +- sample std over seeds), when the runs recorded them."""
    classes = list(dict.fromkeys(c for r in rows for c in r.get("per_class_auc", {})))
    if not classes:
        return ""
    lines = ["| method | labels | seeds | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 3)]
    for s in summary:
        group = [r for r in rows if r["method"] == s["method"] and float(r["fraction"]) == s["fraction"]]
        cells = [s["method"], _labels_cell(s), str(s["n_seeds"])]
        for c in classes:
            vals = [r["per_class_auc"][c] for r in group if not math.isnan(r.get("per_class_auc", {}).get(c, math.nan))]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.3f} ± {sd:.3f}" if vals else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\nTest AUC of each class (one-vs-rest; each run's per_class_metrics.csv), mean ± sample std over the seeds"
        " that recorded it.\n\n" + "\n".join(lines) + "\n"
    )


def _labels_cell(s: dict[str, Any]) -> str:
    """``"70 (10 %)"``: labelled images and share actually used (a range over seeds when they differ); the fraction
    asked for (``"10 %"``) for results without split counts."""
    if "labelled_min" not in s:
        return f"{100 * s['fraction']:g} %"
    lo, hi = s["labelled_min"], s["labelled_max"]
    count = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return f"{count} ({100 * s['labelled_share']:.3g} %)"


def _plot(summary: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _figure(summary, metrics)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight" takes in the legend under the panels
    plt.close(fig)


def _figure(summary: list[dict[str, Any]], metrics: list[str]) -> Any:
    """Metric vs label fraction (log axis), one line with seed-std error bars per method: a panel per metric (up to
    8), four to a row, so that no metric of the table (macro F1 among them) is left out of the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    shown = metrics[:8]
    ncols = min(4, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        fig.delaxes(ax)
    for ax, metric in zip(axes.ravel(), shown):
        for method in sorted({s["method"] for s in summary}):
            pts = sorted((s["fraction"], s[metric], s[metric + "_std"]) for s in summary if s["method"] == method)
            xs, ys, es = zip(*pts)
            ax.errorbar([100 * x for x in xs], ys, yerr=es, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        # ticks at the fractions run, written plainly (a log axis otherwise labels 5 and 10 as 5x10^0 and 10^1)
        ticks = sorted({100 * s["fraction"] for s in summary})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("label fraction asked (% of the training section)")
        ax.set_title(metric.removeprefix("test_"))
        ax.grid(alpha=0.3)
    # below the axes, one method per entry with its settings wrapped at the commas: a variant such as
    # "bundle:key=value,..." is far wider than a panel and would cover the curves
    handles, labels = axes[0][0].get_legend_handles_labels()
    wrapped = [_wrap_label(label) for label in labels]
    fig.tight_layout()
    fig.legend(handles, wrapped, loc="upper left", bbox_to_anchor=(0.0, 0.0), fontsize=7, frameon=False)
    return fig


def _wrap_label(label: str, width: int = 70) -> str:
    """Break a method name after ``:`` and ``,`` so that no line is wider than ``width`` characters when it can."""
    pieces = [p for p in re.split(r"(?<=[:,])", label) if p]
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)
