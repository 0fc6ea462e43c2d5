"""One short, seeded CPU run of every bundle; prints each bundle's validation metrics after one epoch.

A refactor of the bundles (their parts, the trainers) must leave each bundle's behaviour unchanged. This runs
every bundle under ``bundles/`` of a checkout for one epoch (two-stage bundles: one pretraining epoch, then one
fine-tuning epoch) with seed 0 on its phantom, and saves the last line of each run's ``metrics.jsonl``. Run it
on the old and the new checkout on the same machine and compare::

    git worktree add /tmp/before <old commit>
    python benchmarks/one_epoch_check.py --repo /tmp/before --out /tmp/one_epoch/before.json
    python benchmarks/one_epoch_check.py --repo . --out /tmp/one_epoch/after.json
    python benchmarks/one_epoch_check.py --compare /tmp/one_epoch/before.json /tmp/one_epoch/after.json

Each checkout runs with its own ``.venv`` (``bash scripts/setup.sh`` there first): an editable install's import
hook wins over ``PYTHONPATH``, so one environment cannot serve two checkouts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

STAGE_EPOCHS = {"pretrain": "pretrain_epochs", "train": "max_epochs"}


def run_bundle(repo: Path, name: str, work: Path, threads: int) -> dict:
    configs = repo / "bundles" / name / "configs"
    out = work / name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    python = repo / ".venv" / "bin" / "python"
    start = time.perf_counter()
    for stage in ("pretrain", "train"):
        if not (configs / f"{stage}.json").is_file():
            continue
        cmd = [str(python), "-m", "monai.bundle", "run", "--config_file", str(configs / f"{stage}.json")]
        cmd += ["--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]
        cmd += ["--bundle_root", str(configs.parent), "--output_dir", str(out), "--ckpt_dir", str(out / "models")]
        cmd += ["--seed", "0", "--progress_bar", "false", f"--{STAGE_EPOCHS[stage]}", "1"]
        log = out / f"{stage}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=repo)
        if code != 0:
            return {"error": f"{stage} exit {code}, see {log}"}
    lines = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    row = {k: v for k, v in json.loads(lines[-1]).items() if k != "wall_s"}
    row["run_s"] = round(time.perf_counter() - start, 1)
    return row


def compare(before: dict, after: dict) -> int:
    print("| bundle | metric | before | after | same |\n|---|---|---|---|---|")
    bad = 0
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name, {}), after.get(name, {})
        keys = sorted(k for k in set(b) | set(a) if k.startswith("val_")) or ["error"]
        for k in keys:
            same = b.get(k) == a.get(k)
            bad += not same
            print(f"| {name} | {k} | {b.get(k)} | {a.get(k)} | {'yes' if same else 'NO'} |")
    return 1 if bad else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=".", help="checkout whose bundles and .venv run")
    p.add_argument("--out", help="JSON file of results (kept between calls: finished bundles are skipped)")
    p.add_argument("--bundles", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    a = p.parse_args()
    if a.compare:
        raise SystemExit(compare(*(json.loads(Path(f).read_text()) for f in a.compare)))
    repo = Path(a.repo).resolve()
    out = Path(a.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    names = a.bundles or sorted(
        p.name for p in (repo / "bundles").iterdir() if (p / "configs" / "train.json").is_file()
    )
    for name in names:
        if name in results and "error" not in results[name]:
            continue
        results[name] = run_bundle(repo, name, out.parent / out.stem, a.threads)
        print(name, results[name], flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
