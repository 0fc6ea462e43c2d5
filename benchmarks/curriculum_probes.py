"""The probes of every curricular pretraining of an `s4mi benchmark` folder, stage by stage.

Each pretraining of ``curricular_ssl_cxr_classification`` (``<out>/pretrain/<method>/seed<k>/``) logs, per epoch,
its stage and that stage's loss (``pretrain_metrics.jsonl``), and kNN and linear probes of the frozen backbone at
the random initialisation (``probe_metrics.jsonl``, epoch 0) and at each stage's end. This prints one Markdown row
per pretraining and stage end: the task, its epochs, the stage's last loss (and accuracy, for rotation and jigsaw),
and the probes' mean AUC on the validation split.

    .venv/bin/python benchmarks/curriculum_probes.py benchmarks/results/curricular_cxr
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TASKS = ("rotation", "jigsaw", "reconstruction", "contrastive")


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def table(out: Path) -> list[str]:
    lines = [
        "| pretraining | after | epochs | last loss of the stage | its accuracy | probe kNN AUC | probe linear AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in sorted((out / "pretrain").glob("*/seed*")):
        metrics = rows_of(run / "pretrain_metrics.jsonl")
        probes = {r["epoch"]: r for r in rows_of(run / "probe_metrics.jsonl")}
        if not metrics:
            continue
        name = run.parent.name.replace("__", ":")
        start = probes.get(0)
        if start:
            lines.append(
                f"| {name} | initialisation | 0 | - | - | {start.get('probe_knn_auc_encoder', float('nan')):.4f} | "
                f"{start.get('probe_linear_auc_encoder', float('nan')):.4f} |"
            )
        by_stage: dict[int, list[dict]] = {}
        for r in metrics:
            by_stage.setdefault(int(r.get("stage", 0)), []).append(r)
        for stage, rs in sorted(by_stage.items()):
            last = rs[-1]
            task = next((t for t in TASKS if f"loss_{t}" in last), "?")
            acc = last.get(f"{task}_acc")
            probe = probes.get(last["epoch"], {})
            lines.append(
                f"| {name} | stage {stage}: {task} | {last['epoch']} | {last['loss']:.4f} | "
                f"{'-' if acc is None else f'{acc:.3f}'} | {probe.get('probe_knn_auc_encoder', float('nan')):.4f} | "
                f"{probe.get('probe_linear_auc_encoder', float('nan')):.4f} |"
            )
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    a = p.parse_args()
    print("\n".join(table(a.out)))


if __name__ == "__main__":
    main()
