"""The data path measured apart: how long each bundle's training step waits for its next batch.

For each bundle (its ``configs/train.json``, and ``configs/pretrain.json`` for a two-stage bundle) on its phantom
with its default loaders (``num_workers`` 0 unless given), one short run of ``--iterations`` steps is made through
MONAI's bundle workflow, timed by Ignite's events on the trainer as Ignite's ``BasicTimeProfiler`` times them
(that profiler itself sizes its arrays by the first epoch's length and breaks on a loader shorter than the epoch): the
wait for each batch (``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``: from asking the loader to having the batch,
augmentation and both streams of a semi-supervised loader included) and each step (``ITERATION_STARTED`` to
``ITERATION_COMPLETED``: forward, losses, backward, optimizer step and the per-step handlers such as the EMA
update), apart from the epoch's handlers (validation, checkpoints). The share reported is ``wait / (wait + step)``:
of the time the trainer spends stepping, the share spent waiting for data. The first step of a run is left out (first-call dispatch, phantom files read cold).

Each bundle runs in its own process, one thread (``--threads``); the phantom is made once per kind beforehand.

    .venv/bin/python benchmarks/data_wait.py --iterations 12 --threads 1
    .venv/bin/python benchmarks/data_wait.py --bundles mean_teacher_polyp_segmentation --set num_workers=2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"

CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

config, meta, overrides, stage = json.loads(sys.argv[1])
wf = ConfigWorkflow(config_file=config, meta_file=meta, workflow_type="train", **overrides)
wf.initialize()
trainer = wf.parser.get_parsed_content("train#trainer")
t = {}
data, step = [], []
trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: t.__setitem__("batch", time.perf_counter()))
trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: data.append(time.perf_counter() - t["batch"]))
trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: t.__setitem__("step", time.perf_counter()))
trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: step.append(time.perf_counter() - t["step"]))
wf.run()
print("RESULT " + json.dumps({"data": data[1:], "step": step[1:]}))
"""


def bundle_stages(name: str) -> list[str]:
    configs = BUNDLES / name / "configs"
    return [s for s in ("pretrain.json", "train.json") if (configs / s).is_file()]


def measure(name: str, stage: str, iterations: int, phantom_n: int, threads: int, extra: dict) -> dict:
    configs = BUNDLES / name / "configs"
    with tempfile.TemporaryDirectory() as out:
        train = json.loads((configs / stage).read_text())
        epochs_key = "pretrain_epochs" if stage == "pretrain.json" else "max_epochs"
        overrides = {
            "phantom_n": phantom_n,
            "output_dir": out,
            "ckpt_dir": f"{out}/models",
            "progress_bar": False,
            epochs_key: 1,
            "train#trainer#epoch_length": iterations + 1,
            **extra,
        }
        if stage == "train.json" and "pretrained_ckpt" in train:
            overrides["pretrained_ckpt"] = ""  # fine-tune from the initialisation: the data path is the same
        if "curriculum" in train:
            overrides["curriculum"] = "rotation:1+contrastive:1"
            overrides.pop("pretrain_epochs")
            overrides["train#trainer#max_epochs"] = 2
        if "probe_every" in train:
            overrides["probe_every"] = 0
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
        args = json.dumps([str(configs / stage), str(configs / "metadata.json"), overrides, stage])
        run = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, env=env, cwd=out)
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if run.returncode != 0 or line is None:
            return {"error": (run.stderr or run.stdout)[-1500:]}
        res = json.loads(line[len("RESULT ") :])
    data, step = res["data"], res["step"]
    return {
        "iterations": len(step),
        "data_ms": 1e3 * statistics.median(data),
        "step_ms": 1e3 * statistics.median(step),
        "share": sum(data) / (sum(data) + sum(step)),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bundles", nargs="*", default=None, help="default: every bundle under bundles/")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--phantom-n", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run (num_workers=2)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    a = p.parse_args()
    extra = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except json.JSONDecodeError:
            extra[k] = v
    names = a.bundles or sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())
    rows = []
    print("| bundle | stage | steps timed | wait for the batch (ms, median) | step (ms, median) | wait share |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for stage in bundle_stages(name):
            r = measure(name, stage, a.iterations, a.phantom_n, a.threads, extra)
            rows.append({"bundle": name, "stage": stage, **r})
            if "error" in r:
                print(f"| {name} | {stage} | failed: {r['error'].splitlines()[-1][:120]} | | | |", flush=True)
                continue
            print(
                f"| {name} | {stage.removesuffix('.json')} | {r['iterations']} | {r['data_ms']:.1f} | {r['step_ms']:.1f} | "
                f"{100 * r['share']:.1f} % |",
                flush=True,
            )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
