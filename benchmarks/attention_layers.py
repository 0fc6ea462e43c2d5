"""Attention-in-lung of the curricular benchmark's models at three Grad-CAM layers, with what each layer allows.

The bundle scores Grad-CAM at ``class_layers.relu``, DenseNet121's last activation. At the benchmark's 64 x 64 input
that layer is 2 x 2 (DenseNet downsamples by 32), so its bilinearly upsampled map is a blend of four corner bumps
and can hardly follow the lung fields: the share of a map inside the lungs is bounded by that of its best single
cell. This script measures, for every finished run of an ``s4mi benchmark`` folder that still has its
``models/model.pt`` (not committed), the mean share of each test image's Grad-CAM map (top class, as
``s4mi.handlers.AttentionInMask``) inside its lung mask at ``class_layers.relu`` (2 x 2), ``features.denseblock3``
(4 x 4) and ``features.denseblock2`` (8 x 8), and prints a Markdown table (mean ± std over seeds) with two reference
rows computed from the same test masks: the lungs' share of the image (a flat map's share) and the ceiling, the
mean over images of the best share a map of one non-zero cell reaches at each layer's resolution (a non-negative
map's share is a weighted mean of its cells' shares, so no map of that layer scores higher).

    .venv/bin/python benchmarks/attention_layers.py benchmarks/results/curricular_cxr > \
        benchmarks/results/curricular_cxr/attention_layers.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from gradcam_overlays import load_images, runs_by_method
from monai.networks.nets import DenseNet121

from s4mi.handlers import attention_share, grad_cam

LAYERS = {"class_layers.relu": 2, "features.denseblock3": 4, "features.denseblock2": 8}


def ceiling(mask: torch.Tensor, cells: int) -> float:
    """Mean over images of the largest in-mask share of a bilinearly upsampled ``cells x cells`` one-hot map."""
    basis = torch.eye(cells * cells).reshape(-1, 1, cells, cells)
    up = F.interpolate(basis, size=mask.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # K H W
    shares = torch.einsum("khw,bhw->bk", up, (mask[:, 0] > 0.5).float()) / up.sum((1, 2))
    return float(shares.max(1).values.mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--methods", nargs="*", help="only these methods (default: every one with models)")
    a = p.parse_args()
    fractions = sorted({json.loads(r.read_text())["fraction"] for r in (a.out / "runs").glob("**/result.json")})
    header = "| method | labels | " + " | ".join(f"`{k}` ({n}x{n})" for k, n in LAYERS.items()) + " |"
    lines = [header, "|---" * (2 + len(LAYERS)) + "|"]
    reference = None
    for fraction in fractions:
        for method, runs in sorted(runs_by_method(a.out, fraction).items()):
            if a.methods and method not in a.methods:
                continue
            per_layer: dict[str, list[float]] = {k: [] for k in LAYERS}
            for run in runs.values():
                if not (run / "models" / "model.pt").is_file():
                    continue
                test = [d for d in json.loads((run / "split.json").read_text())["test"] if "mask" in d]
                x, mask = load_images(test)
                if reference is None:
                    reference = (float((mask > 0.5).float().mean()), {k: ceiling(mask, n) for k, n in LAYERS.items()})
                net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(test[0]["label"]))
                net.load_state_dict(torch.load(run / "models" / "model.pt", weights_only=True))
                net.eval()
                for layer in LAYERS:
                    maps, _ = grad_cam(net, x, layer)
                    per_layer[layer].append(float(attention_share(maps, mask).nanmean()))
            if not per_layer["class_layers.relu"]:
                continue
            cells = []
            for v in per_layer.values():
                cells.append(f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
            lines.append(
                f"| {method} | {float(fraction) * 100:g} % ({len(per_layer['class_layers.relu'])} seeds) | "
                + " | ".join(cells)
                + " |"
            )
    if reference is not None:
        area, top = reference
        lines.append(
            "| lungs' share of the image (a flat map) | - | " + " | ".join(f"{area:.3f}" for _ in LAYERS) + " |"
        )
        lines.append(
            "| ceiling: best one-cell map at this resolution | - | "
            + " | ".join(f"{top[k]:.3f}" for k in LAYERS)
            + " |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
