"""How much each augmentation moves a cxr model's predictions, per finding, against how much images differ.

    .venv/bin/python benchmarks/augmentation_gap.py benchmarks/data/cxr-n3300/datalist.json RUN_DIR/models/model.pt ...

Mean Teacher's consistency asks the student to give a strongly augmented image the teacher's answer for a weakly
augmented one. That is harmless only where the augmentation leaves a finding's evidence alone. For each checkpoint
(the cxr bundles' DenseNet121, 1 channel, 6 outputs) and each augmentation below, applied with probability 1 to the
first 500 test images (the bundles' evaluation preprocessing: scale to [0, 1], resize to 64 x 64), this prints per
finding ``gap / var``: the mean squared change of the predicted probability between the clean and the augmented image,
divided by the variance of the clean predictions across images. A ratio near or above 1 means the augmentation moves
the prediction as much as a different image does. Augmentations are drawn with a fixed seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.networks.nets import DenseNet121
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    Resized,
    ScaleIntensityd,
)

from s4mi.data.datalist import load_datalist
from s4mi.data.phantoms import CXR_CLASSES

# the cxr bundles' views: weak (train#augmentation) and strong (train#strong_augmentation), one transform at a time
AUGMENTATIONS = {
    "weak affine (rotate 0.17, scale 0.1, shift 3)": RandAffined(
        "image", prob=1.0, rotate_range=0.17, scale_range=0.1, translate_range=3, padding_mode="zeros"
    ),
    "strong affine (rotate 0.26, scale 0.15, shift 4)": RandAffined(
        "image", prob=1.0, rotate_range=0.26, scale_range=0.15, translate_range=4, padding_mode="zeros"
    ),
    "whole-pixel shift up to 3 (nearest)": RandAffined(
        "image", prob=1.0, translate_range=3, padding_mode="zeros", mode="nearest"
    ),
    "Gaussian noise std 0.05": RandGaussianNoised("image", prob=1.0, std=0.05),
    "Gaussian noise std 0.02": RandGaussianNoised("image", prob=1.0, std=0.02),
    "gamma 0.8-1.25": RandAdjustContrastd("image", prob=1.0, gamma=(0.8, 1.25)),
    "gamma 0.7-1.5": RandAdjustContrastd("image", prob=1.0, gamma=(0.7, 1.5)),
}


def _predict(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.sigmoid(net(x[i : i + 125])) for i in range(0, len(x), 125)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datalist")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=500, help="test images used")
    args = parser.parse_args()
    root = Path(args.datalist).parent
    items = load_datalist(args.datalist)["test"][: args.n]
    load = Compose(
        [
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            ScaleIntensityd("image"),
            Resized("image", (64, 64)),
            EnsureTyped("image", dtype=torch.float32),
        ]
    )
    clean = [load({"image": str(root / item["image"])}) for item in items]
    x_clean = torch.stack([d["image"] for d in clean])
    views = {}
    for name, aug in AUGMENTATIONS.items():
        aug.set_random_state(0)
        views[name] = torch.stack([torch.as_tensor(aug(dict(d))["image"]) for d in clean])
    for path in args.checkpoints:
        net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(CXR_CLASSES))
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.eval()
        p_clean = _predict(net, x_clean)
        var = p_clean.var(0)
        print(f"\n{path}\n")
        print("| augmentation | " + " | ".join(CXR_CLASSES) + " |")
        print("|---" * (len(CXR_CLASSES) + 1) + "|")
        for name, x in views.items():
            gap = ((_predict(net, x) - p_clean) ** 2).mean(0)
            print(f"| {name} | " + " | ".join(f"{g / v:.2f}" for g, v in zip(gap.tolist(), var.tolist())) + " |")


if __name__ == "__main__":
    main()
