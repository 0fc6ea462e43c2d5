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


def runs_by_method(out: Path, fraction: str) -> dict[str, dict[int, Path]]:
    """{method: {seed: run folder}} of the finished runs at ``fraction``, read from their ``result.json`` (the
    folder names are the methods made file-system safe, not the methods)."""
    found: dict[str, dict[int, Path]] = {}
    for result in sorted((out / "runs").glob("**/result.json")):
        row = json.loads(result.read_text())
        if float(row["fraction"]) == float(fraction):
            found.setdefault(row["method"], {})[int(row["seed"])] = result.parent
    return found


def is_curriculum(method: str) -> bool:
    """The bundle's default curriculum, or a ``curriculum=`` of more than one stage (``a:5+b:5``)."""
    variant = method.partition(":")[2]
    if not variant:
        return True
    settings = dict(p.split("=", 1) for p in variant.split(",") if "=" in p)
    return "curriculum" in settings and "+" in settings["curriculum"]


def pick(found: dict[str, dict[int, Path]]) -> tuple[str, str]:
    """(scratch method, the curriculum with the best mean validation AUC over its seeds)."""
    scratch = [m for m in found if "pretrained_ckpt=" in m.partition(":")[2].split(",")]
    if not scratch:
        raise SystemExit(f"no scratch run (variant pretrained_ckpt=) among {sorted(found)}")
    scores = {
        m: statistics.mean(best_val(r) for r in runs.values())
        for m, runs in found.items()
        if is_curriculum(m) and all((r / "metrics.jsonl").is_file() for r in runs.values())
    }
    if not scores:
        raise SystemExit(f"no curriculum run among {sorted(found)}")
    best = max(scores, key=scores.__getitem__)
    print("mean best validation AUC by curriculum:", {k: round(v, 4) for k, v in scores.items()}, "->", best)
    return scratch[0], best


def load_images(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and lung masks ``B 1 64 64`` of datalist items, read as the bundle's evaluation reads them."""
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
    return x, torch.stack([torch.as_tensor(b["mask"]).float() for b in batch])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--fraction", default="0.05")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=6)
    a = p.parse_args()
    found = runs_by_method(a.out, a.fraction)
    scratch, best = pick(found)
    runs = {name: found[m][a.seed] for name, m in (("scratch", scratch), ("curriculum", best))}
    for run in runs.values():
        if not (run / "models" / "model.pt").is_file() or not (run / "split.json").is_file():
            raise SystemExit(f"{run} has no models/model.pt or split.json (they are not committed): run it again")
    split = json.loads((runs["scratch"] / "split.json").read_text())
    items = [d for d in split["test"] if "mask" in d and any(d["label"])][: a.n]
    x, mask = load_images(items)
    maps = {}
    for name, run in runs.items():
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(items[0]["label"]))
        net.load_state_dict(torch.load(run / "models" / "model.pt", weights_only=True))
        m, _ = grad_cam(net, x, "class_layers.relu")
        maps[name] = (m, attention_share(m, mask))
    fig, axes = plt.subplots(3, len(items), figsize=(max(2.2 * len(items), 6.0), 7.4))
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
    curriculum = best.partition(":")[2].removeprefix("curriculum=") or "default curriculum"
    fig.suptitle(
        f"Grad-CAM (top class), {float(a.fraction):.0%} labels, seed {a.seed}\n"
        f"scratch vs {curriculum}\n"
        f"share in the lungs, mean of these images: scratch {maps['scratch'][1].nanmean():.2f}, "
        f"curriculum {maps['curriculum'][1].nanmean():.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(a.out / "gradcam_overlays.png", dpi=110)
    print("wrote", a.out / "gradcam_overlays.png")


if __name__ == "__main__":
    main()
