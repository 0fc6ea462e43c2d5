"""Grad-CAM overlays of the curricular benchmark: the model trained from scratch vs the best curriculum, same images.

For a finished ``benchmarks/run_curricular.sh`` grid (``s4mi benchmark`` output folder), picks at one label fraction
and seed the scratch run (``pretrained_ckpt=``) and the curriculum whose fine-tuned models have the best mean
*validation* AUC over the seeds (the test set chooses nothing), then draws, for the first ``--n`` test images that
have a finding, the image with its lung contour and each model's Grad-CAM map (``s4mi.handlers.grad_cam``, top class,
``class_layers.relu``) with the share of the map inside the lungs. Writes ``<out>/gradcam_overlays.png``.

    .venv/bin/python benchmarks/gradcam_overlays.py benchmarks/results/curricular_cxr --fraction 0.05 --seed 0
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from monai.networks.nets import DenseNet121  # noqa: E402
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityd  # noqa: E402

from s4mi.handlers import attention_share, grad_cam  # noqa: E402


def best_val(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return max(r.get("val_mean_auc", float("nan")) for r in rows)


def pick(out: Path, fraction: str) -> tuple[str, str]:
    """(scratch method, best curriculum method by mean validation AUC over seeds at ``fraction``)."""
    methods = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    scratch = next(m for m in methods if "pretrained_ckpt=" in m)
    curricula = [m for m in methods if m != scratch and ("+" in m or ":" not in m)]
    scores = {}
    for m in curricula:
        runs = sorted((out / "runs" / m / f"frac{fraction}").glob("seed*"))
        vals = [best_val(r) for r in runs if (r / "metrics.jsonl").is_file()]
        if vals:
            scores[m] = statistics.mean(vals)
    best = max(scores, key=scores.get)  # type: ignore[arg-type]
    print("mean best validation AUC by curriculum:", {k: round(v, 4) for k, v in scores.items()}, "->", best)
    return scratch, best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--fraction", default="0.05")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=6)
    a = p.parse_args()
    scratch, best = pick(a.out, a.fraction)
    runs = {
        name: a.out / "runs" / m / f"frac{a.fraction}" / f"seed{a.seed}"
        for name, m in (("scratch", scratch), ("curriculum", best))
    }
    split = json.loads((runs["scratch"] / "split.json").read_text())
    items = [d for d in split["test"] if "mask" in d and any(d["label"])][: a.n]
    load = Compose(
        [
            LoadImaged(["image", "mask"], image_only=True),
            EnsureChannelFirstd(["image", "mask"]),
            ScaleIntensityd("image"),
            Resized("image", (64, 64)),
            Resized("mask", (64, 64), mode="nearest"),
        ]
    )
    batch = [load({"image": d["image"], "mask": d["mask"]}) for d in items]
    x = torch.stack([torch.as_tensor(b["image"]).float() for b in batch])
    mask = torch.stack([torch.as_tensor(b["mask"]).float() for b in batch])
    maps = {}
    for name, run in runs.items():
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(items[0]["label"]))
        net.load_state_dict(torch.load(run / "models" / "model.pt", weights_only=True))
        m, _ = grad_cam(net, x, "class_layers.relu")
        maps[name] = (m, attention_share(m, mask))
    fig, axes = plt.subplots(3, len(items), figsize=(2.2 * len(items), 6.9))
    for i in range(len(items)):
        img, lung = x[i, 0].T.numpy(), mask[i, 0].T.numpy()  # PNG axes are (W, H) in MONAI: back to rows
        axes[0, i].imshow(img, cmap="gray")
        axes[0, i].contour(lung, levels=[0.5], colors="lime", linewidths=0.8)
        axes[0, i].set_title(f"findings {[j for j, v in enumerate(items[i]['label']) if v]}", fontsize=8)
        for row, name in ((1, "scratch"), (2, "curriculum")):
            m, share = maps[name]
            axes[row, i].imshow(img, cmap="gray")
            axes[row, i].imshow(m[i, 0].T.numpy(), cmap="jet", alpha=0.45)
            axes[row, i].contour(lung, levels=[0.5], colors="lime", linewidths=0.8)
            axes[row, i].set_title(f"{name}: {share[i]:.2f} in lungs", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(
        f"Grad-CAM (top class) at {float(a.fraction):.0%} labels, seed {a.seed}: scratch vs {best.split(':', 1)[-1]}\n"
        f"mean share in the lungs over these images: scratch {maps['scratch'][1].nanmean():.2f}, "
        f"curriculum {maps['curriculum'][1].nanmean():.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(a.out / "gradcam_overlays.png", dpi=110)
    print("wrote", a.out / "gradcam_overlays.png")


if __name__ == "__main__":
    main()
