"""The main job on the embedded default data: the supervised chest X-ray baseline, trained, tested and plotted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from s4mi.benchmark.runner import RunSpec, run_one, task_arguments

__all__ = ["run_demo"]

BUNDLE = "supervised_cxr_classification"


def plot_learning_curve(metrics_file: Path, out_png: Path, metric: str = "val_mean_auc") -> Path:
    """Plot ``metric`` per epoch from a :class:`~s4mi.handlers.MetricsLogger` file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in metrics_file.read_text().splitlines() if ln.strip()]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["epoch"] for r in rows], [r[metric] for r in rows], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{BUNDLE}: validation")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def run_demo(out_dir: str | os.PathLike = "outputs/demo", max_epochs: int = 8, seed: int = 0) -> dict[str, Any]:
    """Train the supervised chest X-ray baseline on the phantom (made on first use), test it, plot, report."""
    out = Path(out_dir)
    task_args, _ = task_arguments("cxr")
    spec = RunSpec(BUNDLE, 1.0, seed, {"max_epochs": max_epochs})
    print(f"s4mi demo: training {BUNDLE} on the chest X-ray phantom ({max_epochs} epochs, CPU takes a few minutes)")
    row = run_one(spec, out, task_args)
    run_dir = out / "runs" / spec.name
    curve = plot_learning_curve(run_dir / "metrics.jsonl", run_dir / "learning_curve.png")
    print(
        "test metrics: "
        + ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in row.items() if k.startswith("test_"))
    )
    print(f"train time: {row['train_wall_s']} s, peak RSS {row['peak_rss_mib']} MiB")
    print(f"checkpoint: {run_dir / 'models' / 'model.pt'}")
    print(f"learning curve: {curve}")
    print(f"TensorBoard logs: {run_dir} (tensorboard --logdir {run_dir})")
    print(f"logs: {run_dir / 'train.log'}, {run_dir / 'evaluate.log'}")
    return row
