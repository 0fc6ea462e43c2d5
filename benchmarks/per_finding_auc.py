"""Per-finding test AUC of cxr classification checkpoints (the mean AUC of the benchmark tables, split by finding).

    .venv/bin/python benchmarks/per_finding_auc.py benchmarks/data/cxr-n3300/datalist.json RUN_DIR/models/model.pt ...

Each checkpoint is the state dict of the cxr bundles' network (MONAI DenseNet121, 1 channel, 6 outputs, ReLU) and is
evaluated on the datalist's ``test`` section with the bundles' evaluation preprocessing (scale to [0, 1], resize to
64 x 64). Prints one row per checkpoint: the six findings' ROC AUCs and their mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.metrics import compute_roc_auc
from monai.networks.nets import DenseNet121
from monai.transforms import Compose, EnsureTyped, LoadImaged, Resized, ScaleIntensityd

from s4mi.data.datalist import load_datalist
from s4mi.data.phantoms import CXR_CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datalist")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    items = load_datalist(args.datalist)["test"]
    root = Path(args.datalist).parent
    tf = Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            ScaleIntensityd("image"),
            Resized("image", (args.size, args.size)),
            EnsureTyped("image", dtype=torch.float32),
        ]
    )
    images = torch.stack([tf({"image": str(root / item["image"])})["image"] for item in items])
    labels = torch.tensor([item["label"] for item in items], dtype=torch.float32)
    print(" | ".join([*CXR_CLASSES, "mean", "checkpoint"]))
    for path in args.checkpoints:
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(CXR_CLASSES))
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.eval()
        with torch.no_grad():
            probs = torch.cat([torch.sigmoid(net(images[i : i + 100])) for i in range(0, len(images), 100)])
        aucs = [float(compute_roc_auc(probs[:, c], labels[:, c])) for c in range(len(CXR_CLASSES))]
        print(" | ".join([*(f"{a:.3f}" for a in aucs), f"{sum(aucs) / len(aucs):.4f}", path]))


if __name__ == "__main__":
    main()
