"""Linear probe of a pretrained classification backbone: the standard check that self-supervised features are useful.

Freezes the backbone a pretraining stage wrote (``save_pretrained_backbone``: ``models/pretrained.pt``), takes its
pooled features of every image of a datalist (evaluation transforms only: load, scale to [0, 1], resize), and fits
a logistic-regression head on the training features of a seeded share of the labelled images (full-batch L-BFGS,
L2 chosen on the validation split). Prints the test AUC next to the same probe on a randomly initialised backbone
(same seed), so a row reads "how much did pretraining add over random features". Multi-label datalists
(``label`` a multi-hot list) get a sigmoid head and mean per-class AUC; multi-class ones a softmax head and
one-vs-rest mean AUC.

Example (the S2MTS2 cxr phantom)::

    .venv/bin/python benchmarks/linear_probe.py --datalist benchmarks/data/cxr-n2000/datalist.json \
        --ckpt runs/pretrain/models/pretrained.pt --fractions 0.1 1.0

This is an evaluation tool for benchmarks, not part of the package: it loads images with MONAI transforms and fits
the probe with torch (no scikit-learn dependency).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_roc_auc
from monai.networks.nets import DenseNet121
from monai.transforms import Compose, LoadImage, Resize, ScaleIntensity

from s4mi.handlers import load_pretrained_backbone
from s4mi.networks import densenet_features


def load_split(datalist: Path, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    data = json.loads(datalist.read_text())
    root = datalist.parent
    tf = Compose([LoadImage(image_only=True, ensure_channel_first=True), ScaleIntensity(), Resize((size, size))])
    out = {}
    for part in ("training", "validation", "test"):
        items = data.get(part, [])
        if not items:
            continue
        x = torch.stack([torch.as_tensor(tf(str(root / d["image"]))).float() for d in items])
        y = torch.as_tensor(np.asarray([d["label"] for d in items]))
        out[part] = (x, y)
    return out


@torch.no_grad()
def features(backbone: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    backbone.eval()
    return torch.cat([backbone(x[i : i + batch]) for i in range(0, len(x), batch)])


def fit_probe(f: torch.Tensor, y: torch.Tensor, multilabel: bool, n_out: int, l2: float) -> torch.nn.Linear:
    torch.manual_seed(0)
    head = torch.nn.Linear(f.shape[1], n_out)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = head(f)
        loss = F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y)
        loss = loss + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def auc(head: torch.nn.Linear, f: torch.Tensor, y: torch.Tensor, multilabel: bool, n_out: int) -> float:
    with torch.no_grad():
        p = torch.sigmoid(head(f)) if multilabel else torch.softmax(head(f), dim=1)
    target = y if multilabel else F.one_hot(y, n_out)
    return float(compute_roc_auc(p, target, average="macro"))


def probe(feats: dict[str, torch.Tensor], data: dict, fraction: float, seed: int) -> tuple[float, float]:
    y_tr = data["training"][1]
    multilabel = y_tr.ndim == 2
    n_out = y_tr.shape[1] if multilabel else int(y_tr.max()) + 1
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y_tr), generator=g)[: max(2, round(fraction * len(y_tr)))]
    f_tr = feats["training"][idx]
    mean, std = f_tr.mean(0), f_tr.std(0) + 1e-6
    norm = {k: (v - mean) / std for k, v in feats.items()}
    best = None
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        head = fit_probe(norm["training"][idx], y_tr[idx], multilabel, n_out, l2)
        val = auc(head, norm["validation"], data["validation"][1], multilabel, n_out)
        if best is None or val > best[0]:
            best = (val, auc(head, norm["test"], data["test"][1], multilabel, n_out))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datalist", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, nargs="*", default=[], help="pretrained.pt file(s) to probe")
    p.add_argument("--size", type=int, default=64, help="input size the backbone was pretrained at")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_split(args.datalist, args.size)
    act = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
    rows = []
    for name in ["random init", *args.ckpt]:
        torch.manual_seed(0)
        net = DenseNet121(spatial_dims=2, in_channels=args.in_channels, out_channels=2, act=act)
        if name != "random init":
            load_pretrained_backbone(net, name)
        backbone = densenet_features(net)
        feats = {k: features(backbone, x) for k, (x, _) in data.items()}
        for frac in args.fractions:
            res = [probe(feats, data, frac, s) for s in args.seeds]
            val, test = np.mean([r[0] for r in res]), np.mean([r[1] for r in res])
            rows.append((str(name), frac, val, test))
            print(f"{name}\tfraction {frac}\tval AUC {val:.4f}\ttest AUC {test:.4f}", flush=True)
    print("\n| backbone | labelled share | val AUC | test AUC |\n|---|---|---|---|")
    for name, frac, val, test in rows:
        print(f"| {name} | {frac:g} | {val:.4f} | {test:.4f} |")


if __name__ == "__main__":
    main()
