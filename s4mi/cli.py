"""The ``s4mi`` command line: data, split, benchmark, probe and the demo main job."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_METHODS = {
    "cxr": ["supervised_cxr_classification"],
    "skin": ["supervised_skin_classification"],
    "skin_seg": ["supervised_skin_segmentation"],
    "polyp": ["supervised_polyp_segmentation"],
    "ct3d": ["supervised_ct_segmentation"],
}


# label fractions of a task's grid when --fractions is not given (S4MI: 10, 30, 50, 70 and 100 % for segmentation)
DEFAULT_FRACTIONS = {"skin_seg": [0.1, 0.3, 0.5, 0.7, 1.0]}


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs (value parsed as JSON when it parses) into a dict of bundle overrides."""
    from s4mi.benchmark.runner import parse_overrides

    try:
        return parse_overrides(pairs, what="--set")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _cmd_data_make(a: argparse.Namespace) -> None:
    from s4mi.data.phantoms import make_phantom

    path = make_phantom(a.name, a.out, n=a.n, seed=a.seed, image_size=a.size, dicom=a.dicom, splits=tuple(a.splits))
    data = json.loads(Path(path).read_text())
    counts = ", ".join(f"{s} {len(data.get(s, []))}" for s in ("training", "validation", "test"))
    print(f"wrote {path} ({counts})")


def _cmd_data_adapt(a: argparse.Namespace) -> None:
    from s4mi.data.adapters import adapt

    kwargs: dict[str, Any] = {"check_files": not a.no_check}
    if a.policy:
        kwargs["policy"] = a.policy
    data = adapt(a.name, a.root, out=a.out, **kwargs)
    counts = ", ".join(f"{s} {len(data.get(s, []))}" for s in ("training", "unlabeled", "validation", "test"))
    print(f"wrote {a.out} ({counts})")


def _cmd_data_check(a: argparse.Namespace) -> None:
    from s4mi.data.check import find_leakage
    from s4mi.data.datalist import load_datalist

    data = load_datalist(a.datalist, dataset_dir=a.dataset_dir or None)
    counts = ", ".join(f"{s} {len(data.get(s, []))}" for s in ("training", "unlabeled", "validation", "test"))
    leaks = find_leakage(data, by_content=not a.no_hash)
    if leaks:
        for line in leaks:
            print(f"leakage: {line}")
        raise SystemExit(f"{a.datalist}: {len(leaks)} item(s) shared between sections ({counts})")
    print(f"{a.datalist}: valid, no item shared between sections ({counts})")


def _cmd_split(a: argparse.Namespace) -> None:
    from s4mi.data.datalist import load_datalist, save_datalist
    from s4mi.data.split import isic2018_protocol, label_fraction_split, pranet_protocol

    load_datalist(a.datalist, check_files=False)  # validate; the split itself keeps the file's relative paths
    data = json.loads(Path(a.datalist).read_text())
    if a.protocol == "isic2018":
        out = isic2018_protocol(data, labelled_fraction=a.fraction if a.fraction else 0.2, seed=a.seed or 0)
    elif a.protocol == "pranet":
        out = pranet_protocol(
            data, labelled_fraction=a.fraction if a.fraction else 0.2, seed=2022 if a.seed is None else a.seed
        )
    else:
        if a.fraction is None:
            raise SystemExit("s4mi split: give --fraction (or --protocol)")
        out = label_fraction_split(data, a.fraction, seed=0 if a.seed is None else a.seed, strategy=a.strategy)
    save_datalist(out, a.out)
    counts = ", ".join(f"{s} {len(out.get(s, []))}" for s in ("training", "unlabeled", "validation", "test"))
    print(f"wrote {a.out} ({counts})")


# `s4mi benchmark` with no arguments: README's main job. Supervised vs Mean Teacher on the polyp phantom at 10 % labels,
# and supervised at 100 %, one seed, two runs at a time: seed 0 of benchmarks/results/mean_teacher_polyp, on a 2-core
# CPU in about 10 minutes.
QUICK = {
    "task": "polyp",
    "methods": ["mean_teacher_polyp_segmentation", "supervised_polyp_segmentation"],  # longest run first
    "fractions": [0.1, 1.0],
    "seeds": [0],
    "out": "outputs/benchmark",
    "jobs": 2,
    "threads": 1,
}


def _cmd_benchmark(a: argparse.Namespace) -> None:
    from s4mi.benchmark import run_grid, write_reports

    if a.task is None:  # no task: the quick grid; other options given still apply
        for key, value in QUICK.items():
            if getattr(a, key) is None:
                setattr(a, key, value)
        print(f"s4mi benchmark: quick grid {QUICK['methods']} on the {QUICK['task']} phantom (about 10 min on 2 cores)")
    a.fractions = a.fractions or DEFAULT_FRACTIONS.get(a.task, [0.1, 1.0])
    a.seeds = a.seeds or [0, 1, 2]
    a.out = a.out or "benchmarks/results/latest"
    a.jobs = a.jobs or 1
    if not a.methods and a.task not in DEFAULT_METHODS:
        raise SystemExit(f"s4mi benchmark: give --methods for task {a.task!r}")
    methods = a.methods or DEFAULT_METHODS[a.task]
    command = "s4mi " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    rows = run_grid(
        a.task,
        methods,
        a.fractions,
        a.seeds,
        a.out,
        overrides=_parse_overrides(a.set),
        equal_steps=not a.equal_epochs,
        phantom_n=a.phantom_n,
        threads=a.threads,
        reevaluate=a.reevaluate,
        jobs=a.jobs,
        pretrain_seed=a.pretrain_seed,
        semi_steps=a.semi_steps,
    )
    paths = write_reports(rows, a.out, command=command)
    print(Path(paths["markdown"]).read_text())
    for k, p in paths.items():
        print(f"{k}: {p}")


def _cmd_run(a: argparse.Namespace, extra: Sequence[str]) -> None:
    from s4mi.bundle import BundleConfigError
    from s4mi.bundle.stages import StageError, run_stages

    try:
        run_stages(a.bundle, extra, names=a.stages, echo=lambda line: print(f"s4mi run: {line}", flush=True))
    except (StageError, BundleConfigError, FileNotFoundError) as e:
        raise SystemExit(f"s4mi run: {e}") from None


def _cmd_bundles_build(a: argparse.Namespace) -> None:
    from s4mi.bundle import _REPO_BUNDLES
    from s4mi.bundle.build import build, check

    root = Path(a.bundles_dir) if a.bundles_dir else _REPO_BUNDLES
    if a.check:
        problems = check(root, a.names or None)
        if problems:
            print("\n\n".join(problems))
            raise SystemExit(
                f"s4mi bundles build --check: {len(problems)} file(s) differ from their parts; "
                "run `s4mi bundles build` (and edit the parts under bundles/_parts, not the generated configs)"
            )
        print(f"s4mi bundles build --check: every bundle under {root} matches its parts")
        return
    changed = build(root, a.names or None)
    for name, files in changed.items():
        print(f"wrote {name}: {', '.join(files)}")
    if not changed:
        print(f"s4mi bundles build: every bundle under {root} was up to date")


def _cmd_probe(a: argparse.Namespace) -> None:
    from s4mi.benchmark.probe import probe_checkpoint, probe_table

    scores = probe_checkpoint(
        a.bundle,
        a.ckpt,
        datalist=a.datalist,
        fraction=a.fraction,
        phantom_n=a.phantom_n,
        seed=a.seed,
        device=a.device,
        overrides=_parse_overrides(a.set),
    )
    print(probe_table(scores))


def _cmd_demo(a: argparse.Namespace) -> None:
    from s4mi.demo import run_demo

    run_demo(out_dir=a.out, max_epochs=a.epochs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s4mi", description="Self-supervision and semi-supervision for medical imaging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make phantom data, adapt public datasets, check datalists")
    dsub = data.add_subparsers(dest="data_command", required=True)
    mk = dsub.add_parser("make", help="write a seeded phantom dataset and its datalist")
    from s4mi.data.phantoms import PHANTOMS

    mk.add_argument("name", choices=list(PHANTOMS))
    mk.add_argument("--out", required=True)
    mk.add_argument("--n", type=int, default=1000)
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--size", type=int, default=None, help="image size (default: the generator's)")
    mk.add_argument("--dicom", action="store_true", help="write DICOM instead of PNG (cxr)")
    mk.add_argument(
        "--splits",
        nargs=3,
        type=float,
        default=[0.7, 0.1, 0.2],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of training, validation and test (default 0.7 0.1 0.2)",
    )
    mk.set_defaults(func=_cmd_data_make)
    ad = dsub.add_parser("adapt", help="datalist from a public dataset's own layout")
    ad.add_argument("name", choices=["chestxray14", "chexpert", "isic2018", "kvasir", "pranet", "msd"])
    ad.add_argument("root")
    ad.add_argument("--out", required=True)
    ad.add_argument("--policy", choices=["ones", "zeros", "ignore"], help="CheXpert uncertainty policy")
    ad.add_argument("--no-check", action="store_true", help="don't check that every file exists")
    ad.set_defaults(func=_cmd_data_adapt)
    ck = dsub.add_parser(
        "check", help="validate a datalist and its files; report images and patients shared between sections"
    )
    ck.add_argument("datalist")
    ck.add_argument("--dataset-dir", default="")
    ck.add_argument("--no-hash", action="store_true", help="compare paths and patients only, not file contents")
    ck.set_defaults(func=_cmd_data_check)

    sp = sub.add_parser("split", help="seeded label-fraction split of a datalist")
    sp.add_argument("datalist")
    sp.add_argument("--out", required=True)
    sp.add_argument("--fraction", type=float, default=None)
    sp.add_argument("--seed", type=int, default=None)
    sp.add_argument("--strategy", default="auto", choices=["auto", "union", "stratified", "random", "first"])
    sp.add_argument("--protocol", choices=["isic2018", "pranet"], help="a named protocol of METHODS.md")
    sp.set_defaults(func=_cmd_split)

    bm = sub.add_parser("benchmark", help="methods x label fractions x seeds through the bundles")
    bm.add_argument(
        "--task",
        default=None,
        help="phantom name (cxr, skin, skin_seg, polyp, ct3d) or a datalist path; none: the quick grid",
    )
    bm.add_argument("--methods", nargs="+", default=None, help="bundle names")
    bm.add_argument(
        "--fractions", nargs="+", type=float, default=None, help="default 0.1 1.0 (skin_seg: 0.1 0.3 0.5 0.7 1.0)"
    )
    bm.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2")
    bm.add_argument("--out", default=None, help="default benchmarks/results/latest")
    bm.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="bundle config overrides")
    bm.add_argument("--phantom-n", type=int, default=1000)
    bm.add_argument("--threads", type=int, default=None, help="OMP threads per run")
    bm.add_argument("--jobs", type=int, default=None, help="runs at a time (default 1)")
    bm.add_argument("--equal-epochs", action="store_true", help="same epochs (not steps) at every fraction")
    bm.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="run each self-supervised pretraining once, with this seed, and fine-tune from it at every seed",
    )
    bm.add_argument(
        "--semi-steps",
        choices=["bundle", "equal"],
        default="bundle",
        help="steps per epoch of the semi-supervised bundles: their own epoch_length (default), or 'equal': an epoch of "
        "the supervised runs' length (training set // labelled batch size)",
    )
    bm.add_argument("--reevaluate", action="store_true", help="evaluate finished runs again, keeping training times")
    bm.set_defaults(func=_cmd_benchmark)

    rn = sub.add_parser(
        "run",
        help="run a bundle's stages in order (pretrain, then train) with the same overrides",
        description="Runs `python -m monai.bundle run` for each stage config of the bundle (configs/pretrain.json "
        "when the bundle has one, then configs/train.json), passing each further --key value override to the stages "
        "whose config defines the key. A key no stage defines stops the run (naming the closest key), and so does "
        "--max_epochs (or batch_size, learning_rate) without --pretrain_epochs (pretrain_batch_size, "
        "pretrain_learning_rate) when a pretraining stage runs.",
    )
    rn.add_argument("bundle", help="bundle name (under bundles/) or path")
    rn.add_argument("--stages", nargs="+", default=None, help="stage configs to run (default: pretrain train)")
    rn.set_defaults(func=_cmd_run, takes_extra=True)

    bd = sub.add_parser("bundles", help="bundle folders built from shared parts (bundles/_parts)")
    bsub = bd.add_subparsers(dest="bundles_command", required=True)
    bb = bsub.add_parser(
        "build",
        help="write every bundle's configs from its parts",
        description="Merges each bundle's parts (bundles/_parts/bundles/<name>.yaml lists them) into its configs/ "
        "files. --check writes nothing and exits non-zero, naming bundle and file, when a committed config differs.",
    )
    bb.add_argument("names", nargs="*", help="bundles to build (default: every bundle with a spec)")
    bb.add_argument("--check", action="store_true", help="only compare; exit 1 when a committed file differs")
    bb.add_argument("--bundles-dir", default=None, help="folder holding the bundles and _parts (default: the repo's)")
    bb.set_defaults(func=_cmd_bundles_build)

    pr = sub.add_parser(
        "probe",
        help="kNN and linear probes of a pretrained backbone vs random initialisation",
        description="Fits DINO's weighted kNN and a logistic-regression probe on the frozen backbone features of "
        "the labelled share of training and scores them on validation, for a randomly initialised network of the "
        "bundle's architecture and the same network with the checkpoint's backbone loaded (same seed).",
    )
    pr.add_argument("--bundle", required=True, help="bundle name (under bundles/) or path")
    pr.add_argument("--ckpt", required=True, help="the pretraining's models/pretrained.pt")
    pr.add_argument("--datalist", default=None, help="datalist JSON (default: the bundle's phantom)")
    pr.add_argument("--fraction", type=float, default=None, help="labelled share (default: the bundle's)")
    pr.add_argument("--phantom-n", type=int, default=None, help="phantom size (default: the bundle's)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--device", default="cpu")
    pr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train.json key to set, e.g. finetune_backbone=vit",
    )
    pr.set_defaults(func=_cmd_probe)

    dm = sub.add_parser("demo", help="train the supervised chest X-ray baseline on the phantom and report")
    dm.add_argument("--out", default="outputs/demo")
    dm.add_argument("--epochs", type=int, default=8)
    dm.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "takes_extra", False):
        args.func(args, extra)
        return
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.func(args)


if __name__ == "__main__":
    main()
